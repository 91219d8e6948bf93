"""The playbook: a recommended action per RFM segment and per cluster, from a small YAML file.

The defaults are ``steps/playbook.yaml`` (packaged with the code; edit it, or point
``RFM_PLAYBOOK`` at your own file: entries it leaves out keep their default). The report shows
the actions; the export writes each customer's segment action as ``recommended_action`` (and
Customer Profiles as ``rfm_recommended_action``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from steps.errors import RFMError
from steps.segments import SEGMENT_NAMES

DEFAULT_PLAYBOOK = Path(__file__).with_name("playbook.yaml")
PLAYBOOK_ENV = "RFM_PLAYBOOK"
RECOMMENDED_ACTION = "recommended_action"
# The export writes the action as the Customer Profiles attribute rfm_recommended_action, and a
# profile attribute value holds 1 to 255 characters (API reference, PutProfileObjectType / Attributes).
MAX_ACTION_CHARACTERS = 255


@dataclass(frozen=True)
class Playbook:
    """Actions per RFM segment, and cluster rules (words of the name -> action), first match wins."""

    segments: Mapping[str, str]
    cluster_rules: Sequence[tuple[tuple[str, ...], str]]
    source: str

    def for_segment(self, segment: str) -> str:
        """The action for an RFM segment ("" for a name the playbook does not know)."""
        return self.segments.get(segment, "")

    def for_cluster(self, name: str, dominant_segment: str = "") -> str:
        """The first rule whose words all appear in ``name``, else the dominant segment's action.

        Examples
        --------
        >>> book = load_playbook()
        >>> book.for_cluster("Recent one-time low spenders").startswith("Onboarding")
        True
        >>> book.for_cluster("Odd name", "Champions") == book.for_segment("Champions")
        True
        """
        words = set(name.replace("(", " ").replace(")", " ").split())
        for match, action in self.cluster_rules:
            if set(match) <= words:
                return action
        return self.for_segment(dominant_segment)


def _read(path: Path) -> dict:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RFMError(f"cannot read the playbook ({error.strerror})", str(path), f"Check {PLAYBOOK_ENV}") from None
    except yaml.YAMLError as error:
        raise RFMError(f"the playbook is not valid YAML ({str(error).splitlines()[0]})", str(path),
                       "Fix the file (see steps/playbook.yaml for the layout)") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or set(loaded) - {"segments", "clusters"}:
        raise RFMError("the playbook must be a mapping with 'segments' and/or 'clusters'", str(path),
                       "See steps/playbook.yaml for the layout")
    return loaded


def _action(text: str, entry: str, where: str) -> str:
    """``text`` with its white space collapsed; an action longer than a profile attribute is refused."""
    action = " ".join(text.split())
    if len(action) > MAX_ACTION_CHARACTERS:
        raise RFMError(f"the action of {entry} has {len(action)} characters, more than the "
                       f"{MAX_ACTION_CHARACTERS} a Customer Profiles attribute holds", where,
                       "Shorten it to one or two sentences")
    return action


def _segments(raw: object, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise RFMError("'segments' must map RFM segment names to a non-empty action text", where)
    unknown = sorted(set(map(str, raw)) - set(SEGMENT_NAMES))
    if unknown:
        raise RFMError(f"unknown RFM segment(s) {', '.join(unknown)} in 'segments'", where,
                       f"Use the names {', '.join(SEGMENT_NAMES)}")
    return {str(k): _action(v, f"segment {k!r}", where) for k, v in raw.items()}


def _rules(raw: object, where: str) -> list[tuple[tuple[str, ...], str]]:
    rules = []
    for number, entry in enumerate(raw if isinstance(raw, list) else [None], start=1):
        if not (isinstance(entry, dict) and isinstance(entry.get("match"), list) and entry["match"]
                and isinstance(entry.get("action"), str) and entry["action"].strip()):
            raise RFMError("each entry of 'clusters' needs 'match' (a list of words) and 'action' (text)", where)
        rules.append((tuple(str(word) for word in entry["match"]), _action(entry["action"], f"cluster rule {number}",
                                                                            where)))
    return rules


def load_playbook(path: str | Path | None = None) -> Playbook:
    """The playbook: ``path``, else ``$RFM_PLAYBOOK``, over the packaged defaults.

    Raises
    ------
    RFMError
        A file that cannot be read, is not YAML, or names an unknown segment.
    """
    defaults = _read(DEFAULT_PLAYBOOK)
    segments = _segments(defaults.get("segments"), str(DEFAULT_PLAYBOOK))
    rules = _rules(defaults.get("clusters"), str(DEFAULT_PLAYBOOK))
    chosen = path or os.environ.get(PLAYBOOK_ENV) or None
    if chosen is None:
        return Playbook(segments, rules, "defaults (steps/playbook.yaml)")
    own = _read(Path(chosen))
    if "segments" in own:
        segments = {**segments, **_segments(own["segments"], str(chosen))}
    if "clusters" in own:
        rules = _rules(own["clusters"], str(chosen))
    return Playbook(segments, rules, str(chosen))
