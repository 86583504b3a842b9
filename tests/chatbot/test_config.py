"""The config file sets option defaults; flags win; a bad file is one clear error line."""

from pathlib import Path

import pytest

from chatbot.cli.commands import main
from chatbot.cli.config import config_path, load_config
from chatbot.cli.options import build_parser


def parse(argv: list[str]):
    parser = build_parser()
    parser.set_defaults(**load_config())
    return parser.parse_args(argv)


def test_no_config_file_keeps_the_built_in_defaults(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CHATBOT_CONFIG")  # the user config folder's config.toml, not there
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    assert not config_path().exists()
    args = parse(["history"])
    assert (args.ctx, args.threads, args.gpu_layers, args.flash_attn) == (4096, None, None, None)


def test_config_file_sets_defaults_and_flags_override_it(tmp_path: Path):
    config_path().write_text(
        'ctx = 2048\nthreads = 1\ngpu_layers = 12\nflash_attn = true\nmodel = "~/m.gguf"\n'
    )
    args = parse(["ask", "hi"])
    assert (args.ctx, args.threads, args.gpu_layers, args.flash_attn) == (2048, 1, 12, True)
    assert args.model == Path("~/m.gguf").expanduser()
    args = parse(["--threads", "2", "ask", "hi", "--ctx", "512", "--no-flash-attn"])
    assert (args.ctx, args.threads, args.flash_attn) == (512, 2, False)


def test_config_file_sets_the_faq_bot_options(tmp_path: Path):
    config_path().write_text('faq_confidence = 1\nhandoff_reply = "Call Sam on 555-0100."\n')
    args = parse(["ask", "hi"])
    assert (args.faq_confidence, args.handoff_reply) == (1.0, "Call Sam on 555-0100.")
    args = parse(["ask", "hi", "--faq-confidence", "0.3"])
    assert args.faq_confidence == 0.3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ('faq_confidence = "high"\n', "faq_confidence must be a number"),
        ('threads = "two"\n', "threads must be a whole number"),
        ("threads = true\n", "threads must be a whole number"),
        ("ctx = \n", "cannot read the config file"),
    ],
)
def test_bad_config_file_is_one_clear_line(capsys, text: str, message: str):
    config_path().write_text(text)
    assert main(["history"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
