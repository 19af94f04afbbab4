"""The command line: `python -m llmkit train | generate | bench | grade | doctor`.

    python -m llmkit train --data shakespeare.txt --steps 2000 --out runs/shakespeare
    python -m llmkit train --tinytales 2000 --tokenizer bpe --vocab-size 512 --time-budget 120
    python -m llmkit train --data shakespeare.txt --out runs/shakespeare --resume
    python -m llmkit generate --checkpoint runs/shakespeare --prompt "ROMEO:" --max-new-tokens 300
    python -m llmkit bench --only matmul,decode
    python -m llmkit grade class/ --csv grades.csv
    python -m llmkit doctor --self-test

Each subcommand is a thin layer over the library (llmkit.train, llmkit.generate,
llmkit.bench, llmkit.grading, llmkit.doctor): what it can do, a notebook can do with the
same calls.
Mistakes in the arguments, unusable paths and damaged files end with a message on stderr
and exit status 2, before any training; a run that fails on its way (a loss that turns nan,
a full disk) ends with a message and exit status 1, its last good checkpoint kept. Never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

EXAMPLES = __doc__.split("\n\n")[1]


def main(argv=None) -> int:
    """Run one subcommand; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:   # the grader parses its own arguments
        from llmkit.grading.cli import main as grade_main

        return grade_main(argv[1:])
    if argv[:1] == ["bench"]:
        from llmkit.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["doctor"]:
        from llmkit.doctor import main as doctor_main

        return doctor_main(argv[1:])
    args = build_parser().parse_args(argv)
    from llmkit.checkpoint import CheckpointWriteError
    from llmkit.train import TrainingDiverged

    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps(finite_or_none({"error": str(error), "step": getattr(error, "step", None),
                                             "loss": getattr(error, "loss", None)}), allow_nan=False))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --- argument types: each refuses what it cannot use, with what it expected ----------------


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed PyTorch can take: 0 .. 2**63 - 1."""
    value = _number(text, int)
    if not 0 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 2**63 - 1, got {text!r}")
    return value


def finite(text: str) -> float:
    """Any finite number (nan and inf are refused)."""
    return _number(text)


def positive(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability above 0 and at most 1, got {text!r}")
    return value


def finite_or_none(value):
    """A copy of value (dicts, lists, numbers) with nan and inf as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand (bench, grade and doctor describe themselves)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmkit", description="Train, sample and grade the course's GPT models.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a GPT on a text file or on TinyTales",
                                description="Train a GPT; --json ends with one JSON line of results.")
    data = train.add_argument_group("data (one of)")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="PATH.txt", help="a UTF-8 text file to train on")
    source.add_argument("--tinytales", type=positive_int, metavar="N", help="train on N generated TinyTales stories")
    data.add_argument("--tokenizer", choices=("char", "bpe"), default="char", help="default: char")
    data.add_argument("--vocab-size", type=positive_int, default=512, help="BPE vocabulary size (default 512)")
    data.add_argument("--val-fraction", type=finite, default=0.1, help="held-out tail (default 0.1)")
    shape = train.add_argument_group("model")
    shape.add_argument("--layers", type=positive_int, default=4, help="transformer blocks (default 4)")
    shape.add_argument("--heads", type=positive_int, default=4, help="attention heads (default 4)")
    shape.add_argument("--width", type=positive_int, default=128, help="d_model (default 128)")
    shape.add_argument("--context", type=positive_int, default=64, help="context length (default 64)")
    shape.add_argument("--dropout", type=finite, default=0.0, help="default 0.0")
    run = train.add_argument_group("training")
    run.add_argument("--steps", type=count, default=2000, help="optimizer steps (default 2000)")
    run.add_argument("--time-budget", type=positive, metavar="SECONDS", help="stop after this long")
    run.add_argument("--batch-size", type=positive_int, default=12, help="default 12")
    run.add_argument("--lr", type=positive, default=1e-3, help="peak learning rate (default 1e-3)")
    run.add_argument("--min-lr", type=non_negative, help="final learning rate (default lr / 10)")
    run.add_argument("--warmup", type=count, default=100, help="warmup steps (default 100)")
    run.add_argument("--eval-interval", type=count, default=250, help="0 to evaluate only at the end")
    run.add_argument("--seed", type=seed, default=1337, help="data, model and batch seed")
    run.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    run.add_argument("--compile", action="store_true", help="use torch.compile")
    run.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                     help="auto: bf16 on CUDA GPUs that have it, else fp32; bf16 also on CPUs "
                          "with native bf16 (about 1.8x faster there)")
    run.add_argument("--out", metavar="DIR", help="write the checkpoint here (at the end)")
    run.add_argument("--checkpoint-interval", type=positive_int, help="also save every N steps")
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--json", action="store_true", help="end with one JSON line of results")
    train.set_defaults(run=run_train)

    generate = commands.add_parser("generate", help="continue a prompt with a trained checkpoint",
                                   description="Stream the text a checkpoint writes after a prompt.")
    generate.add_argument("--checkpoint", required=True, metavar="DIR", help="a folder saved by train --out")
    generate.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    generate.add_argument("--max-new-tokens", type=count, default=200, help="default 200")
    generate.add_argument("--temperature", type=non_negative, default=0.8, help="0 is greedy (default 0.8)")
    generate.add_argument("--top-k", type=positive_int, help="keep the k most likely tokens")
    generate.add_argument("--top-p", type=probability, help="keep the smallest set with this much probability")
    generate.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    generate.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    generate.set_defaults(run=run_generate)

    # Listed for --help; main() hands their arguments over before this parser sees them.
    commands.add_parser("bench", help="print speed figures (python -m llmkit bench --help)", add_help=False)
    commands.add_parser("grade", help="grade exercise notebooks (python -m llmkit grade --help)",
                        add_help=False)
    commands.add_parser("doctor", help="check this machine: versions, widgets, device, precision "
                        "(python -m llmkit doctor --help)", add_help=False)
    return parser


# --- train ---------------------------------------------------------------------------------


def run_train(args) -> int:
    import torch

    from llmkit.checkpoint import check_output_folder, load_checkpoint
    from llmkit.data.batches import split_train_val
    from llmkit.device import pick_device, seed_everything
    from llmkit.model import GPT, GPTConfig
    from llmkit.train import TrainConfig, Trainer

    if args.out and not args.resume:
        check_output_folder(args.out)   # a wrong --out is found now, not after training
    device = pick_device(args.device)
    seed_everything(args.seed)
    if args.resume:
        if not args.out:
            raise ValueError("--resume continues the run saved in --out DIR; give --out.")
        saved = load_checkpoint(args.out)
        if saved.tokenizer is None or saved.train_config is None or saved.state is None:
            raise ValueError(f"{args.out} holds no training state or tokenizer to resume from; "
                             "train a new run instead.")
        tokenizer, model = saved.tokenizer, saved.model
        text = read_corpus(args)
        config = resumed_config(saved, args)
    else:
        text = read_corpus(args)
        tokenizer = train_tokenizer(text, args)
        model_config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=args.context,
                                 n_layer=args.layers, n_head=args.heads, d_model=args.width,
                                 dropout=args.dropout)
        model = GPT(model_config)
        config = TrainConfig(
            max_steps=args.steps, time_budget_s=args.time_budget, batch_size=args.batch_size,
            lr=args.lr, min_lr=args.lr / 10 if args.min_lr is None else args.min_lr,
            warmup_steps=args.warmup, eval_interval=args.eval_interval,
            checkpoint_interval=args.checkpoint_interval, out_dir=args.out, seed=args.seed,
            compile=args.compile, precision=args.precision, device=str(device),
            progress=not args.quiet,
        )
    # The corpus's own separator tokens (BPE's <|endoftext|>) count as specials here; typed
    # user text (a prompt) never does.
    corpus_ids = tokenizer.encode(text, allowed_special="all")
    train_ids, val_ids = split_train_val(torch.tensor(corpus_ids), args.val_fraction)
    trainer = Trainer(model, train_ids, val_ids, config, device=device, tokenizer=tokenizer)
    try:
        return report_training(trainer, args, model, tokenizer, train_ids)
    finally:
        from llmkit.distributed import cleanup

        cleanup()   # leave the process group of a run under torchrun


def report_training(trainer, args, model, tokenizer, train_ids) -> int:
    """Resume if asked, train, and print the results (under torchrun: rank 0 prints)."""
    from llmkit.device import describe

    config, device, main_rank = trainer.config, trainer.device, trainer.group.is_main
    if args.resume:
        trainer.resume(args.out)
    if not args.json and main_rank:
        processes = f", {trainer.group.world_size} processes" if trainer.group.active else ""
        print(f"{describe(device)}{processes}\n{model.num_params():,} parameters, {len(train_ids):,} training "
              f"tokens, vocab {tokenizer.vocab_size}", file=sys.stderr)

    first_step, start = trainer.step, time.perf_counter()
    trainer.fit()
    wall_s = time.perf_counter() - start
    if not main_rank:
        return 0
    evals = [r for r in trainer.history if "val_loss" in r]
    final = evals[-1] if evals and evals[-1]["step"] == trainer.step else trainer.estimate_loss()
    tokens_per_step = config.batch_size * config.grad_accum_steps * trainer.context_length
    tokens = (trainer.step - first_step) * tokens_per_step
    result = {"train_loss": final["train_loss"], "val_loss": final["val_loss"], "steps": trainer.step,
              "tokens_per_sec": tokens / wall_s if wall_s > 0 else 0.0, "wall_s": wall_s,
              "device": str(device)}
    if args.json:
        print(json.dumps(finite_or_none(result), allow_nan=False))
    else:
        print(f"step {result['steps']}: train loss {result['train_loss']:.4f}, val loss "
              f"{result['val_loss']:.4f}, {result['tokens_per_sec']:,.0f} tokens/s, "
              f"{wall_s:.1f} s" + (f", saved to {args.out}" if args.out else ""))
    return 0


def resumed_config(saved, args):
    """The saved run's TrainConfig with the new step count, time budget and output.

    The learning-rate schedule keeps its saved length: a cosine that was to reach min_lr at
    step K still does, and steps after K run at min_lr (a new length would jump the
    learning rate back up in the middle of a run). A note on stderr says so.
    """
    from llmkit.train import TrainConfig

    try:
        config = TrainConfig.from_dict(saved.train_config)
        step = int(saved.state.get("step", 0))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{args.out}/config.json holds training settings this llmkit cannot use "
                         f"({error}); restore the file, or train a new run.") from None
    if args.steps <= step:
        raise ValueError(f"the run in {args.out} is already at step {step}; give --steps above "
                         f"{step} to train it further.")
    decay_steps = int(saved.state.get("decay_steps", config.decay_steps))
    if args.steps != config.max_steps and not args.json:
        print(f"note: the learning rate keeps the saved schedule, which reaches min_lr "
              f"{config.min_lr:g} at step {decay_steps}" + (
                  f"; steps {decay_steps + 1}-{args.steps} run at min_lr" if args.steps > decay_steps
                  else "") + ". For a new schedule, train a new run.", file=sys.stderr)
    return TrainConfig.from_dict({**config.to_dict(), "max_steps": args.steps,
                                  "lr_decay_steps": decay_steps,
                                  "warmup_steps": min(config.warmup_steps, decay_steps),
                                  "time_budget_s": args.time_budget, "out_dir": args.out,
                                  "progress": not args.quiet, "log_interval": None})


def read_corpus(args) -> str:
    """The training text named by --data or --tinytales."""
    if args.data:
        from llmkit.data.text import load_text

        return load_text(args.data)
    if args.tinytales is not None:
        if args.tinytales < 1:
            raise ValueError(f"--tinytales needs a positive number of stories, got {args.tinytales}.")
        from llmkit.data.tinytales import tinytales_text

        return tinytales_text(args.tinytales, seed=args.seed)
    raise ValueError("say what to train on: --data PATH.txt or --tinytales N.")


def train_tokenizer(text: str, args):
    """A character tokenizer, or a BPE one of --vocab-size, trained on `text`."""
    from llmkit.tokenizers import BPETokenizer, CharTokenizer

    if args.tokenizer == "char":
        return CharTokenizer.train(text)
    return BPETokenizer.train(text, args.vocab_size)


# --- generate ------------------------------------------------------------------------------


def run_generate(args) -> int:
    import torch

    from llmkit.checkpoint import load_checkpoint
    from llmkit.device import pick_device
    from llmkit.generate import stream

    device = pick_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint, device=device)
    vocab_size = checkpoint.config.vocab_size
    if args.top_k is not None and args.top_k > vocab_size:
        raise ValueError(f"--top-k {args.top_k} is more than the model's {vocab_size} tokens; "
                         f"give at most {vocab_size} (or leave it out to keep every token).")
    tokenizer = checkpoint.tokenizer
    if tokenizer is None:
        raise ValueError(f"{args.checkpoint} has no tokenizer.json, so text cannot be encoded; "
                         "save the checkpoint with its tokenizer.")
    prompt_ids = tokenizer.encode(args.prompt)
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens; give --prompt some text.")
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(args.seed)
    sys.stdout.write(args.prompt)
    # One id at a time; the decoder holds back a character whose bytes span two tokens.
    decoder = tokenizer.stream_decoder()
    for token_id in stream(checkpoint.model, idx, args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, generator=generator):
        text = decoder.push(token_id)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
    sys.stdout.write(decoder.flush() + "\n")
    return 0
