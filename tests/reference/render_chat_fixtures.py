#!/usr/bin/env python3
"""Renders the chat-template fixtures with Python's jinja2, set up the way Hugging Face
`transformers` renders chat templates, and writes tests/fixtures/chat/expected.json, the
reference src/chat.rs is tested against.

    python tests/reference/render_chat_fixtures.py            # needs jinja2
    python tests/reference/render_chat_fixtures.py --extract  # also re-reads SmolLM2's template
                                                              # from its GGUF (needs gguf)

Template provenance: smollm2-135m-instruct.jinja is `tokenizer.chat_template` of
models/SmolLM2-135M-Instruct.Q4_1.gguf; gemma-3-it.jinja is the template of Google's Gemma 3
instruction-tuned models (tokenizer_config.json; the gemma-3-270m base GGUF carries none);
llama-3.2-3b-instruct.jinja and phi-3.5-mini-instruct.jinja are those models' published templates;
chatml.jinja is the ChatML fallback built into src/chat.rs; features.jinja exercises the Jinja
features Hugging Face templates rely on.
"""

import json
import pathlib
import sys
from datetime import datetime, timezone

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "chat"

# A fixed clock so strftime_now is reproducible: 2024-07-26 13:05:09 UTC.
NOW = datetime(2024, 7, 26, 13, 5, 9, tzinfo=timezone.utc)


class TemplateRaised(Exception):
    pass


def raise_exception(message):
    raise TemplateRaised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' definition: Python's json.dumps, no HTML escaping.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)
    return env


TOKENS = {
    "smollm2-135m-instruct.jinja": ("<|im_start|>", "<|im_end|>"),
    "gemma-3-it.jinja": ("<bos>", "<eos>"),
    "llama-3.2-3b-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "chatml.jinja": ("", ""),
    "features.jinja": ("<BOS>", "<EOS>"),
}


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "system_user": [
        msg("system", "You are a concise assistant."),
        msg("user", "What is the capital of France?"),
    ],
    "multi_turn": [
        msg("system", "You are a concise assistant. "),
        msg("user", "  Hi there!\n"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "Tell me a joke about \"quotes\" and <tags>, in Grüße & 日本語."),
    ],
    "user_only": [msg("user", "Hello")],
    "user_assistant": [msg("user", "2+2?"), msg("assistant", " 4 ")],
}

# Conversations a template refuses: (template, conversation name, messages).
REFUSALS = [
    ("gemma-3-it.jinja", "roles_not_alternating",
     [msg("user", "one"), msg("user", "two")]),
    ("gemma-3-it.jinja", "starts_with_assistant",
     [msg("system", "s"), msg("assistant", "a")]),
]


def extract_smollm2():
    import gguf  # noqa: PLC0415 (only needed for --extract)
    reader = gguf.GGUFReader(str(ROOT.parent / "main" / "models" /
                                 "SmolLM2-135M-Instruct.Q4_1.gguf"))
    field = reader.fields["tokenizer.chat_template"]
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    (FIXTURES / "smollm2-135m-instruct.jinja").write_text(text, encoding="utf-8")


def main():
    if "--extract" in sys.argv:
        extract_smollm2()
    env = environment()
    cases = []
    for name, (bos, eos) in TOKENS.items():
        template = env.from_string((FIXTURES / name).read_text(encoding="utf-8"))
        for conv_name, messages in CONVERSATIONS.items():
            for add in (False, True):
                case = {
                    "name": f"{name}/{conv_name}/{'gen' if add else 'nogen'}",
                    "template": name, "bos_token": bos, "eos_token": eos,
                    "messages": messages, "add_generation_prompt": add,
                }
                try:
                    case["output"] = template.render(messages=messages,
                                                     add_generation_prompt=add,
                                                     bos_token=bos, eos_token=eos)
                except TemplateRaised as e:
                    case["error"] = str(e)
                cases.append(case)
    for name, conv_name, messages in REFUSALS:
        bos, eos = TOKENS[name]
        template = env.from_string((FIXTURES / name).read_text(encoding="utf-8"))
        case = {"name": f"{name}/{conv_name}", "template": name, "bos_token": bos,
                "eos_token": eos, "messages": messages, "add_generation_prompt": True}
        try:
            template.render(messages=messages, add_generation_prompt=True, bos_token=bos,
                            eos_token=eos)
            raise SystemExit(f"{case['name']}: expected the template to refuse")
        except TemplateRaised as e:
            case["error"] = str(e)
        cases.append(case)

    formats = ["%d %b %Y", "%Y-%m-%d %H:%M:%S", "%A %B %e %I%p %j %y", "%a %F %T %%",
               "%h"]
    moments = [NOW, datetime(2000, 2, 29, 0, 0, 0, tzinfo=timezone.utc),
               datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
               datetime(2100, 3, 1, 12, 0, 0, tzinfo=timezone.utc),
               datetime(2023, 12, 31, 18, 30, 0, tzinfo=timezone.utc)]
    strftime = [{"unix": int(m.timestamp()), "format": f, "output": m.strftime(f)}
                for m in moments for f in formats]

    out = {"generator": "tests/reference/render_chat_fixtures.py",
           "jinja2": jinja2.__version__, "now_unix": int(NOW.timestamp()),
           "cases": cases, "strftime": strftime}
    (FIXTURES / "expected.json").write_text(
        json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases, {len(strftime)} strftime checks")


if __name__ == "__main__":
    main()
