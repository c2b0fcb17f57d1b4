"""The guide's runnable paths stay marked, parseable and wired into CI.

`.ci/doc_paths.py` runs them for real, on fresh virtualenvs, at the end of `.ci/run` (minutes and a
torch install: too heavy for the suite). These checks are the cheap part, run with everything
else, so that a marker dropped, a block that no longer parses or a section that stops naming its
install fails here, with a message, before CI's long run.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("doc_paths", ROOT / ".ci" / "doc_paths.py")
doc_paths = sys.modules.setdefault("doc_paths", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(doc_paths)


@pytest.mark.parametrize("section", sorted(doc_paths.INSTALLS))
def test_each_path_is_marked_and_walks_from_input_to_submission(section):
    blocks = doc_paths.blocks(section)
    assert blocks, f"no block of docs/getting-started.md is marked <!-- ci: {section} -->"
    commands = [c for b in blocks if not b.file for c in doc_paths.commands(b)]
    walked = [m.group(1) for c in commands for m in re.finditer(r"(?:^|\n)ensemble-kit ([a-z-]+)", c)]
    assert set(doc_paths.REQUIRED[section]) <= set(walked), walked
    for heading in {b.heading for b in blocks}:
        assert f"`{doc_paths.INSTALLS[section]}`" in doc_paths.section_text(heading), heading


def test_the_oof_csv_path_is_section_3_word_for_word():
    (block,) = doc_paths.blocks("core")
    assert block.heading.startswith("## 3.")
    assert doc_paths.commands(block) == [
        "ensemble-kit init store --labels train.csv --id-col image_id --label-col label \\\n"
        "    --sample-submission sample_submission.csv --fold-col fold      # or --folds 5 to make new folds",
        "ensemble-kit import-oof store alice alice_oof.csv --test alice_test.csv --id-col image_id",
        "ensemble-kit import-oof store bob bob_oof.csv --test bob_test.csv --id-col image_id",
        "ensemble-kit ls store                        # OOF leaderboard of what was imported",
        "ensemble-kit stack store --metric log_loss   # honest nested CV of every step",
        "ensemble-kit submit store                    # submission.csv, shaped like sample_submission.csv",
    ]


def _image_config() -> dict:
    import yaml

    blocks = doc_paths.blocks("images")
    assert [b.file for b in blocks if b.file] == ["digits.yaml"]
    return yaml.safe_load(next(b.text for b in blocks if b.file == "digits.yaml"))


def test_the_image_path_writes_its_config_and_keeps_its_heredoc_whole():
    assert _image_config()["data"]["format"] == "folder"
    first = doc_paths.commands(doc_paths.blocks("images")[0])
    assert len(first) == 1 and first[0].startswith("python - <<'EOF'") and first[0].endswith("\nEOF")


def test_the_image_config_is_a_valid_project():
    pytest.importorskip("torch", reason="validating a model's settings needs the train extra")
    from ensemble_kit.project import ProjectConfig

    ProjectConfig.from_dict(_image_config())  # unknown keys and bad values are errors


def test_commands_split_on_lines_continuations_and_heredocs():
    block = doc_paths.Block("core", "## x", 1, "bash", "a \\\n  b\n# note\n\ncat <<EOF\nx\nEOF\nc  # d\n", None)
    assert doc_paths.commands(block) == ["a \\\n  b", "cat <<EOF\nx\nEOF", "c  # d"]


def test_a_marker_must_precede_a_block(tmp_path):
    guide = tmp_path / "guide.md"
    guide.write_text("## 1. x\n\n<!-- ci: core -->\ntext\n```bash\nls\n```\n")
    with pytest.raises(SystemExit, match="must be followed by a code block"):
        doc_paths.blocks("core", guide)


def test_ci_runs_both_paths_on_the_installs_the_guide_names():
    ci = (ROOT / ".ci" / "run").read_text()
    for section in doc_paths.INSTALLS:
        assert re.search(rf"python \.ci/doc_paths\.py {section} --venv", ci), section
        assert f"docs_venv {section}" in ci, section
    assert doc_paths.INSTALLS == {"core": "pip install -e .", "images": 'pip install -e ".[train,report]"'}
