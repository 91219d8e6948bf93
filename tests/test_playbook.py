"""The playbook: an action for every segment and cluster, editable, in the report and the export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from steps import columns as c
from steps.errors import RFMError
from steps.playbook import PLAYBOOK_ENV, RECOMMENDED_ACTION, load_playbook
from steps.segments import SEGMENT_NAMES


def test_defaults_have_an_action_for_every_segment() -> None:
    book = load_playbook()
    assert all(book.for_segment(name) for name in SEGMENT_NAMES)
    assert book.for_segment("Champions").startswith("Reward")


@pytest.mark.parametrize(("name", "starts"), [
    ("Recent one-time low spenders", "Onboarding"),
    ("Recent frequent high spenders", "Loyalty reward"),
    ("Lapsed regular high spenders (At Risk)", "Win-back"),
    ("Lapsed one-time low spenders", "One low-cost"),
    ("Lapsing occasional mid spenders", "Reactivate"),
])
def test_clusters_are_matched_on_the_words_of_their_name(name: str, starts: str) -> None:
    assert load_playbook().for_cluster(name).startswith(starts)


def test_a_cluster_no_rule_matches_gets_its_dominant_segments_action() -> None:
    book = load_playbook()
    assert book.for_cluster("Unusual spenders", "At Risk") == book.for_segment("At Risk")


def test_an_own_file_overrides_what_it_names_and_keeps_the_rest(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "book.yaml"
    own.write_text("segments:\n  Champions: Send a thank-you card.\n")
    monkeypatch.setenv(PLAYBOOK_ENV, str(own))
    book = load_playbook()
    assert book.for_segment("Champions") == "Send a thank-you card."
    assert book.for_segment("Hibernating") == load_playbook(Path(__file__).parents[1] / "steps" / "playbook.yaml"
                                                            ).for_segment("Hibernating")
    assert book.source == str(own)


@pytest.mark.parametrize(("text", "message"), [
    ("segments:\n  Champs: x\n", "unknown RFM segment(s) Champs"),
    ("segments: [1, 2]\n", "'segments' must map"),
    ("clusters:\n  - match: Recent\n", "each entry of 'clusters'"),
    ("segments: {a: [\n", "not valid YAML"),
    ("actions: {}\n", "must be a mapping"),
    ("segments:\n  Loyal: " + "x" * 256 + "\n",
     "the action of segment 'Loyal' has 256 characters, more than the 255 a Customer Profiles attribute holds"),
    ("clusters:\n  - {match: [Recent], action: ok}\n  - {match: [Lapsed], action: " + "y " * 200 + "}\n",
     "the action of cluster rule 2 has 399 characters"),
])
def test_a_broken_playbook_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    own = tmp_path / "book.yaml"
    own.write_text(text)
    with pytest.raises(RFMError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as caught:
        load_playbook(own)
    assert str(caught.value).startswith(f"{own}: ")


def test_an_action_of_255_characters_is_kept_whole(tmp_path: Path) -> None:
    own = tmp_path / "book.yaml"
    own.write_text("segments:\n  Loyal: '" + "z" * 250 + "   end.'\n")
    assert load_playbook(own).for_segment("Loyal") == "z" * 250 + " end."


def test_the_export_carries_each_customers_recommended_action(features_frame: pd.DataFrame) -> None:
    import pyarrow as pa

    from lambdas.export.app import join_tables, with_recommended_action

    features = features_frame.drop(columns=[c.RFM_SEGMENT])
    assignments = pd.DataFrame({c.CUSTOMER_ID: features_frame[c.CUSTOMER_ID], c.CLUSTER: 0,
                                c.CLUSTER_NAME: "Everyone", c.RFM_SEGMENT: features_frame[c.RFM_SEGMENT]})
    book = load_playbook()
    joined = with_recommended_action(join_tables(pa.Table.from_pandas(features, preserve_index=False),
                                                 pa.Table.from_pandas(assignments, preserve_index=False)),
                                     book).to_pandas()
    assert list(joined.columns[: len(c.SEGMENT_COLUMNS) + 1]) == [*c.SEGMENT_COLUMNS, RECOMMENDED_ACTION]
    assert RECOMMENDED_ACTION in joined
    assert (joined[RECOMMENDED_ACTION] == joined[c.RFM_SEGMENT].map(book.for_segment)).all()
    assert joined[RECOMMENDED_ACTION].str.len().gt(0).all()
