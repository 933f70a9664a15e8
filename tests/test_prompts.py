import json

import pandas as pd
import pytest

from rtlm_cli.errors import RtlmError
from rtlm_cli.prompts.sources import (
    first_user_turns,
    load_prompts,
    prompt_id,
    read_truncated_json_array,
    sample_prompts,
    sharegpt_path,
)


def conv(i, first="human"):
    other = "gpt" if first == "human" else "human"
    return {"id": f"c{i}", "conversations": [{"from": first, "value": f"question {i}"}, {"from": other, "value": "answer"}]}


def test_truncated_array_keeps_every_complete_element():
    full = json.dumps([conv(i) for i in range(5)], indent=2)
    cut = full[: full.index('"c4"') + 10]  # cut inside the fifth conversation
    assert [c["id"] for c in read_truncated_json_array(cut)] == ["c0", "c1", "c2", "c3"]
    assert len(list(read_truncated_json_array(full))) == 5
    assert list(read_truncated_json_array("")) == []
    assert list(read_truncated_json_array("[")) == []


def test_first_user_turns_skip_conversations_opened_by_the_assistant():
    assert first_user_turns([conv(1), conv(2, first="gpt"), {"conversations": []}]) == ["question 1"]


def test_bundled_sharegpt_is_salvaged_from_its_truncated_file():
    raw = sharegpt_path().read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)  # the shipped file really is cut off
    prompts = load_prompts("sharegpt")
    assert 9_000 < len(prompts) < 12_000
    assert len({p.prompt_id for p in prompts}) == len(prompts)
    assert all(p.text.strip() for p in prompts)


def test_sampling_is_seeded_and_prefix_stable():
    prompts = load_prompts("sharegpt")
    a = sample_prompts(prompts, 20, seed=1)
    assert a == sample_prompts(prompts, 20, seed=1)
    assert a != sample_prompts(prompts, 20, seed=2)
    assert sample_prompts(prompts, 50, seed=1)[:20] == a  # a bigger -n extends a smaller one


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet", ".txt"])
def test_local_files(tmp_path, suffix):
    texts = ["Explain gravity.", "Who are you?", "Explain gravity."]  # the duplicate is dropped
    path = tmp_path / f"p{suffix}"
    df = pd.DataFrame({"id": [1, 2, 3], "question": texts})
    if suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        df.to_json(path, orient="records")
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".parquet":
        df.to_parquet(path)
    else:
        path.write_text("\n".join(texts) + "\n\n")
    got = load_prompts(str(path))
    assert [p.text for p in got] == texts[:2]
    assert got[0].prompt_id == prompt_id("Explain gravity.")


def test_named_text_column(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"body": ["a b", "c d"], "prompt": ["x", "y"]}).to_csv(path, index=False)
    assert [p.text for p in load_prompts(str(path), text_column="body")] == ["a b", "c d"]
    assert [p.text for p in load_prompts(str(path))] == ["x", "y"]


def test_sharegpt_style_local_json(tmp_path):
    path = tmp_path / "conv.json"
    text = json.dumps([conv(i) for i in range(3)])
    path.write_text(text[:-30])  # truncated too
    assert [p.text for p in load_prompts(str(path))] == ["question 0", "question 1"]


@pytest.mark.parametrize(
    "setup, source, message",
    [
        (lambda d: None, "missing.jsonl", "does not exist"),
        (lambda d: (d / "empty.jsonl").write_text(""), "empty.jsonl", "is empty"),
        (lambda d: (d / "bad.jsonl").write_text("{not json\n"), "bad.jsonl", "cannot read"),
        (lambda d: (d / "nocol.csv").write_text("a,b\n1,2\n"), "nocol.csv", "--text-column"),
        (lambda d: (d / "blank.txt").write_text("\n \n"), "blank.txt", "no non-empty prompts"),
    ],
)
def test_bad_sources(tmp_path, setup, source, message):
    setup(tmp_path)
    with pytest.raises(RtlmError, match=message):
        load_prompts(str(tmp_path / source))


def test_missing_named_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt\nhello\n")
    with pytest.raises(RtlmError, match="no column 'body'"):
        load_prompts(str(path), text_column="body")


def test_hub_name_offline_is_a_clear_error():
    with pytest.raises(RtlmError, match="not a local file"):
        load_prompts("someone/some-dataset")
