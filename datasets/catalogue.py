"""The constraint catalogue: every planning constraint the check knows, and the datasets behind it.

Keys follow the PlanX / Open Digital Planning schema (``listed``, ``designated.conservationArea``...).
The shipped catalogue lives in ``datasets/data/catalogue.json``; a council adds its own keys and
datasets in a file of the same shape named by the ``REDLINE_LOCAL_CATALOGUE`` setting, and granular
article 4 keys (``articleFour.{council}.{name}``) in per-council rule files.

Examples
--------
>>> catalogue = load_catalogue()
>>> catalogue.get("listed").datasets
('listed-building', 'listed-building-outline')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

CATEGORIES = (
    "General policy",
    "Heritage and conservation",
    "Ecology",
    "Flooding",
    "Trees",
)


class CatalogueError(ValueError):
    """A catalogue or article 4 rule file is malformed."""


@dataclass(frozen=True)
class Constraint:
    """One catalogue key.

    ``field`` narrows the datasets' entities to those whose field takes one of the listed values
    (``flood.zoneThree`` is ``flood-risk-level`` 3); ``entities`` narrows to given entity numbers
    (the Broads is national park 520007); ``any_of`` makes a key true when any of those keys is.
    """

    key: str
    category: str
    positive: str
    negative: str
    datasets: tuple[str, ...] = ()
    field: dict[str, tuple[str, ...]] | None = None
    entities: frozenset[int] = frozenset()
    any_of: tuple[str, ...] = ()
    local: bool = False

    @property
    def derived(self) -> bool:
        return bool(self.any_of)


@dataclass(frozen=True)
class Article4Rule:
    """A granular article 4 key of one council: matches intersecting article 4 entities by name or reference."""

    key: str
    council: str
    organisation_entity: str | None
    names: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    description: str = ""

    def matches(self, entity: dict) -> bool:
        org = str(entity.get("organisation-entity") or "")
        if self.organisation_entity and org and org != self.organisation_entity:
            return False
        reference = str(entity.get("reference") or "").strip().lower()
        if reference and reference in self.references:
            return True
        return _normalise(str(entity.get("name") or "")) in self.names


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@dataclass
class Catalogue:
    constraints: list[Constraint]
    article4: dict[str, list[Article4Rule]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_key = {c.key: c for c in self.constraints}

    def get(self, key: str) -> Constraint:
        return self._by_key[key]

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def keys(self) -> list[str]:
        return [c.key for c in self.constraints]

    def datasets(self) -> list[str]:
        """Every dataset behind any key, in catalogue order, without repeats."""
        seen: dict[str, None] = {}
        for constraint in self.constraints:
            for name in constraint.datasets:
                seen.setdefault(name, None)
        return list(seen)

    def article4_rules(self, council: str | None = None) -> list[Article4Rule]:
        if council is None:
            return [rule for rules in self.article4.values() for rule in rules]
        return list(self.article4.get(council.lower(), []))


def _constraint_from(raw: dict, *, local: bool, source: str) -> Constraint:
    try:
        key = raw["key"]
        positive, negative = raw["positive"], raw["negative"]
    except KeyError as missing:
        raise CatalogueError(f"{source}: a constraint is missing {missing}") from None
    category = raw.get("category", "General policy")
    datasets = tuple(raw.get("datasets", ()))
    any_of = tuple(raw.get("any_of", ()))
    if not datasets and not any_of:
        raise CatalogueError(f"{source}: constraint {key!r} names no datasets and no any_of keys")
    fields = {name: tuple(str(v) for v in values) for name, values in (raw.get("field") or {}).items()}
    return Constraint(
        key=key,
        category=category,
        positive=positive,
        negative=negative,
        datasets=datasets,
        field=fields or None,
        entities=frozenset(int(e) for e in raw.get("entities", ())),
        any_of=any_of,
        local=local,
    )


def _read_json(path: Path | str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise CatalogueError(f"{what} {path} is not valid JSON: {err}") from None


def _read_article4(raw: dict, source: str) -> list[Article4Rule]:
    council = raw.get("council")
    if not council:
        raise CatalogueError(f"{source}: an article 4 rule file needs a 'council'")
    org = raw.get("organisation-entity")
    rules = []
    for key, rule in raw.get("keys", {}).items():
        if not key.startswith(f"articleFour.{council}."):
            raise CatalogueError(f"{source}: key {key!r} must start with 'articleFour.{council}.'")
        rules.append(
            Article4Rule(
                key=key,
                council=council,
                organisation_entity=str(org) if org is not None else None,
                names=tuple(_normalise(n) for n in rule.get("names", ())),
                references=tuple(str(r).strip().lower() for r in rule.get("references", ())),
                description=rule.get("description", ""),
            )
        )
    return rules


def load_catalogue(local_path: Path | str | None = None, article4_dir: Path | str | None = None) -> Catalogue:
    """The shipped catalogue, plus a council's own keys from ``local_path`` (same JSON shape).

    A local key with the same name as a shipped one replaces it, so a council can also add its own
    datasets behind a national key (e.g. a local TPO layer under ``tpo``).
    """
    package = resources.files("datasets") / "data"
    shipped = json.loads((package / "catalogue.json").read_text(encoding="utf-8"))
    constraints = {
        raw["key"]: _constraint_from(raw, local=False, source="catalogue.json")
        for raw in shipped["constraints"]
    }
    if local_path:
        local = _read_json(local_path, "local catalogue")
        for raw in local.get("constraints", []):
            constraint = _constraint_from(raw, local=True, source=str(local_path))
            constraints[constraint.key] = constraint
    for constraint in constraints.values():
        unknown = [k for k in constraint.any_of if k not in constraints]
        if unknown:
            raise CatalogueError(f"constraint {constraint.key!r} refers to unknown keys {unknown}")

    article4: dict[str, list[Article4Rule]] = {}
    rule_files = [p for p in (package / "article4").iterdir() if p.name.endswith(".json")]
    if article4_dir:
        rule_files += sorted(Path(article4_dir).glob("*.json"))
    for path in rule_files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rules = _read_article4(raw, str(path))
        article4.setdefault(raw["council"].lower(), []).extend(rules)
    return Catalogue(list(constraints.values()), article4)
