"""Scraping and reading Prometheus metrics in tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """One parsed exposition: every sample, and the families by name."""

    samples: tuple[Sample, ...]
    families: dict[str, str]  # family name → type

    @classmethod
    def parse(cls, text: str) -> Scrape:
        """Parse with prometheus-client's own parser."""
        families = list(text_string_to_metric_families(text))
        samples = tuple(sample for family in families for sample in family.samples)
        return cls(samples, {family.name: family.type for family in families})

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str) -> bool:
        """Whether any sample is named `name`."""
        return any(s.name == name for s in self.samples)


async def scrape(
    client: httpx.AsyncClient, key: str | None = None, path: str = "/metrics"
) -> Scrape:
    """GET /metrics (with `key` if given) and parse it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape.parse(response.text)
