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
from functools import cached_property
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


_DIRECT_KEYS_MEMO = 4096  # sets of datasets remembered by Catalogue.direct_keys: ample, and bounded


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
    """A granular article 4 key of one council and the value that identifies its article 4 direction area."""

    key: str
    council: str
    value: str

    @property
    def description(self) -> str:
        return self.value.strip()


@dataclass(frozen=True)
class Article4Council:
    """One PlanX team's granular article 4 keys, matched exactly as PlanX's GIS service matches them.

    ``name`` is the council's part of the keys (``barkingAndDagenham`` for the team
    ``barking-and-dagenham``); ``shared_directions`` are ``article-4-direction`` values several keys
    share (Brent's ``A4D_CA``), which identify an entity only when its reference is none of the values.
    """

    slug: str
    name: str
    rules: tuple[Article4Rule, ...]
    shared_directions: frozenset[str] = frozenset()

    @cached_property
    def _by_value(self) -> dict[str, list[str]]:
        by_value: dict[str, list[str]] = {}
        for rule in self.rules:
            by_value.setdefault(rule.value, []).append(rule.key)
        return by_value

    @property
    def caz_key(self) -> str:
        """The key PlanX renames ``articleFour.caz`` to for this team."""
        return f"articleFour.{self.name}.caz"

    def match(self, entities: list[dict]) -> dict[str, list[dict]]:
        """For each key, the entities (of those the site meets) that identify it.

        Examples
        --------
        >>> brent = load_catalogue().article4_council("brent")
        >>> found = brent.match([{"name": "", "reference": "A4D_CA2", "article-4-direction": "A4D_CA"}])
        >>> [key for key, hits in found.items() if hits]
        ['articleFour.brent.caTwo']
        """
        by_value = self._by_value
        out: dict[str, list[dict]] = {rule.key: [] for rule in self.rules}
        for entity in entities:
            reference = entity.get("reference")
            direction = entity.get("article-4-direction")
            exact = {_match_name(entity), reference, entity.get("notes")}
            if not (direction in self.shared_directions and reference in by_value):
                exact.add(direction)
            hits = {key for value in exact if isinstance(value, str) for key in by_value.get(value, ())}
            description = str(entity.get("description") or "")
            if description:
                hits.update(key for value, keys in by_value.items() if description.startswith(value) for key in keys)
            for key in hits:
                out[key].append(entity)
        return out


def _match_name(entity: dict) -> str:
    """An article 4 area's name as matched against the rules' values: line breaks read as spaces."""
    return _LINE_BREAK.sub(" ", str(entity.get("name") or ""))


_LINE_BREAK = re.compile(r"\r?\n|\r")


@dataclass
class Catalogue:
    constraints: list[Constraint]
    article4: dict[str, Article4Council] = field(default_factory=dict)

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

    def platform_datasets(self) -> list[str]:
        """The datasets behind the national keys: a council's own keys name layers the platform does not publish."""
        return list(dict.fromkeys(name for c in self.constraints if not c.local for name in c.datasets))

    def direct_keys(self, datasets: set[str]) -> tuple[Constraint, ...]:
        """The keys not derived from others (no ``any_of``) behind any of ``datasets``, in catalogue order.

        Asked once per check with the few datasets a site meets: the answer for each set of them is
        kept (a catalogue has a few dozen datasets, and sites meet a few of them at a time).
        """
        if not datasets:
            return ()
        wanted = frozenset(datasets)
        memo = self._direct_keys_memo
        found = memo.get(wanted)
        if found is None:
            by_dataset = self._direct_keys_by_dataset
            positions = {position for name in wanted for position in by_dataset.get(name, ())}
            found = tuple(self.constraints[position] for position in sorted(positions))
            if len(memo) < _DIRECT_KEYS_MEMO:
                memo[wanted] = found
        return found

    @cached_property
    def _direct_keys_memo(self) -> dict[frozenset[str], tuple[Constraint, ...]]:
        return {}

    @cached_property
    def derived_keys(self) -> tuple[Constraint, ...]:
        """The keys made of others (``any_of``), in catalogue order."""
        return tuple(c for c in self.constraints if c.any_of)

    @cached_property
    def _direct_keys_by_dataset(self) -> dict[str, list[int]]:
        by_dataset: dict[str, list[int]] = {}
        for position, constraint in enumerate(self.constraints):
            if not constraint.any_of:
                for name in constraint.datasets:
                    by_dataset.setdefault(name, []).append(position)
        return by_dataset

    def article4_rules(self, council: str | None = None) -> list[Article4Rule]:
        """Granular article 4 keys: of one team (its PlanX slug, matched exactly), or of all."""
        if council is None:
            return [rule for team in self.article4.values() for rule in team.rules]
        team = self.article4.get(council)
        return list(team.rules) if team is not None else []

    def article4_council(self, council: str | None) -> Article4Council | None:
        """The team's granular article 4 keys, or ``None``: slugs match exactly, as in PlanX."""
        return self.article4.get(council) if council else None

    def article4_teams_for(self, entities: list[dict]) -> list[Article4Council]:
        """The teams (in catalogue order) whose :meth:`Article4Council.match` may find a key among
        ``entities``; the others would find none. Without this, every one of some 30 teams is asked
        about every article 4 area a site meets.

        A team can only match a value it has: an entity's name (as ``match`` reads it), reference,
        notes or direction, or a start of its description. Looked up in one table of all the teams'
        values, so it never leaves out a team ``match`` would find something for.

        Examples
        --------
        >>> catalogue = load_catalogue()
        >>> [t.slug for t in catalogue.article4_teams_for([{"name": "", "reference": "A4D_CA2", "article-4-direction": "A4D_CA"}])]
        ['brent']
        >>> catalogue.article4_teams_for([{"name": "nowhere", "description": "a made-up direction"}])
        []
        """
        teams_of, lengths = self._article4_values
        found: set[str] = set()
        for entity in entities:
            name = _match_name(entity)
            for value in (name, entity.get("reference"), entity.get("notes"), entity.get("article-4-direction")):
                if isinstance(value, str):
                    found.update(teams_of.get(value, ()))
            description = str(entity.get("description") or "")
            if description:
                for length in lengths:
                    if length > len(description):
                        break
                    found.update(teams_of.get(description[:length], ()))
        return [team for slug, team in self.article4.items() if slug in found] if found else []

    @cached_property
    def _article4_values(self) -> tuple[dict[str, set[str]], list[int]]:
        """Every team's values, each with the teams that have it, and their lengths (ascending)."""
        teams_of: dict[str, set[str]] = {}
        for slug, team in self.article4.items():
            for value in team._by_value:
                teams_of.setdefault(value, set()).add(slug)
        return teams_of, sorted({len(value) for value in teams_of})


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


def _read_article4(raw: dict, source: str) -> Article4Council:
    council = raw.get("council")
    name = raw.get("council-name")
    if not council or not name:
        raise CatalogueError(f"{source}: an article 4 rule file needs a 'council' (the PlanX team slug) and a 'council-name'")
    keys = raw.get("keys")
    if not isinstance(keys, dict):
        raise CatalogueError(f"{source}: 'keys' must map each granular key to the value that identifies it")
    rules = []
    for key, value in keys.items():
        if not key.startswith(f"articleFour.{name}."):
            raise CatalogueError(f"{source}: key {key!r} must start with 'articleFour.{name}.'")
        if not isinstance(value, str) or not value:
            raise CatalogueError(f"{source}: key {key!r} needs a non-empty text value")
        rules.append(Article4Rule(key=key, council=council, value=value))
    shared = raw.get("shared-directions", [])
    return Article4Council(council, name, tuple(rules), frozenset(str(v) for v in shared))


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

    article4: dict[str, Article4Council] = {}
    rule_files = sorted((p for p in (package / "article4").iterdir() if p.name.endswith(".json")), key=lambda p: p.name)
    if article4_dir:
        rule_files += sorted(Path(article4_dir).glob("*.json"))
    for path in rule_files:
        team = _read_article4(_read_json(path, "article 4 rule file") if isinstance(path, Path) else json.loads(path.read_text(encoding="utf-8")), str(path))
        article4[team.slug] = team  # a council's own file replaces the shipped one of the same team
    return Catalogue(list(constraints.values()), article4)
