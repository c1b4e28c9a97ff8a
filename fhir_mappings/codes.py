"""Code systems, extension URLs and the R4 code sets we check ourselves."""

# fhir.resources validates structure but not code values, so the sets below
# are copied from the FHIR R4 value sets we emit or accept.

SUBSCALE_SYSTEM = "https://alliance-check.org/fhir/CodeSystem/alliance-subscale"
AGREEMENT_SYSTEM = "https://alliance-check.org/fhir/CodeSystem/alliance-agreement"
SCORE_SYSTEM = "https://alliance-check.org/fhir/CodeSystem/alliance-score"
TOTAL_CODE = "total"
# What a Flag for the therapist is about: "rupture" or "early-concern" (fhir_mappings.flags).
FLAG_SYSTEM = "https://alliance-check.org/fhir/CodeSystem/alliance-flag"
# Alliance Check as the Flag's author: a logical reference, so no Device is written to the EHR.
DEVICE_SYSTEM = "https://alliance-check.org/fhir/device"
DEVICE_VALUE = "alliance-check"

ORDINAL_VALUE_URL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ITEM_WEIGHT_URL = "http://hl7.org/fhir/StructureDefinition/itemWeight"

OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM_SYSTEM = "http://unitsofmeasure.org"
SCORE_UNIT = "{score}"

# http://hl7.org/fhir/R4/valueset-publication-status.html
PUBLICATION_STATUS = frozenset({"draft", "active", "retired", "unknown"})
# http://hl7.org/fhir/R4/valueset-item-type.html
ITEM_TYPES = frozenset(
    {
        "group", "display", "boolean", "decimal", "integer", "date", "dateTime", "time",
        "string", "text", "url", "choice", "open-choice", "attachment", "reference",
        "quantity",
    }
)  # fmt: skip
# http://hl7.org/fhir/R4/valueset-bundle-type.html
BUNDLE_TYPES = frozenset(
    {
        "document", "message", "transaction", "transaction-response", "batch",
        "batch-response", "history", "searchset", "collection",
    }
)  # fmt: skip
# http://hl7.org/fhir/R4/valueset-http-verb.html
HTTP_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
# http://hl7.org/fhir/R4/valueset-questionnaire-answers-status.html
QR_STATUS = frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"})
# http://hl7.org/fhir/R4/valueset-observation-status.html
OBSERVATION_STATUS = frozenset(
    {
        "registered", "preliminary", "final", "amended", "corrected", "cancelled",
        "entered-in-error", "unknown",
    }
)  # fmt: skip
# http://hl7.org/fhir/R4/valueset-observation-category.html
OBSERVATION_CATEGORIES = frozenset(
    {
        "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
        "exam", "therapy", "activity",
    }
)  # fmt: skip
# http://hl7.org/fhir/R4/valueset-document-reference-status.html
DOCUMENT_REFERENCE_STATUS = frozenset({"current", "superseded", "entered-in-error"})
# http://hl7.org/fhir/R4/valueset-flag-status.html
FLAG_STATUS = frozenset({"active", "inactive", "entered-in-error"})
# http://hl7.org/fhir/R4/valueset-flag-category.html
FLAG_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_CATEGORIES = frozenset(
    {"diet", "drug", "lab", "admin", "contact", "clinical", "behavioral", "safety"}
)
