"""``python -m qrw.export``: a finished run as a Hugging Face Llama directory.

    python -m qrw.export --ckpt runs/grpo --out hf/qrw-grpo
    python -m qrw.export --ckpt runs/sft --out hf/qrw-sft --force      # replace an earlier export

The directory (``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``,
``generation_config.json``, ``README.md`` with the prompt format) loads with
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``, no
custom code, and gives qrw's logits (``tests/test_hf.py``). Writing it needs
neither ``transformers`` nor ``safetensors``; without ``safetensors`` the weights
go to ``pytorch_model.bin``. The conversion itself is :mod:`qrw.hf`; this module
holds only the command.
"""

from __future__ import annotations

import argparse

from qrw.config import Parser, run_main


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.export", description="Export a finished qrw run as a Hugging Face Llama directory.")
    p.add_argument("--ckpt", required=True, metavar="DIR", help="run directory (train_sft.py or train_grpo.py)")
    p.add_argument("--out", required=True, metavar="HF_DIR", help="directory to write (must not exist or be empty)")
    p.add_argument("--force", action="store_true", help="overwrite the files of a non-empty --out")
    p.add_argument("--weights", default="auto", choices=["auto", "safetensors", "bin"],
                   help="weights file: model.safetensors (auto: when safetensors is installed) or pytorch_model.bin")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from qrw.hf import export_hf

    args = parse_args(argv)
    written = export_hf(args.ckpt, args.out, force=args.force, weights_format=args.weights)
    print(f"wrote {args.out}/ ({', '.join(path.name for path in written)})")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({args.out!r}); "
          f"the prompt format is in {args.out}/README.md")
    return 0


if __name__ == "__main__":
    run_main(main)
