"""The SMART App Launch URL the manifest lists: a placeholder until the therapist view exists.

Marketplaces and EHRs register the launch URL once, with the listing, so it is published now.
An EHR that launches it today gets an honest "not yet" page rather than a 404 that reads
like a broken install.
"""

from flask import Blueprint, Flask, Response

from plugin.core.errors import page, private_page_headers

bp = Blueprint("launch", __name__)
# A launch URL carries `iss` and `launch` parameters: treat it like the other credential URLs.
bp.after_request(private_page_headers)


@bp.get("/launch")
def launch() -> Response:
    """Tell the therapist the in-EHR view is not available yet (501)."""
    return page(
        501,
        "error.html",
        title="Not available yet",
        message="The alliance scores are already in your EHR as questionnaire responses and "
        "observations. A view of them inside the EHR is planned for a later version.",
    )


def init_app(app: Flask) -> None:
    """Register the launch placeholder."""
    app.register_blueprint(bp)
