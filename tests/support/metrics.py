"""Scrape GET /metrics and read its samples, as Prometheus would."""

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Return every sample of an exposition: {(name, sorted label pairs): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value, 0 when the series is absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def bearer(token: str) -> dict[str, str]:
    """Return the header a scrape with `token` sends."""
    return {"Authorization": f"Bearer {token}"}
