"""TinyTales in figures: speed, variety, the entropy floor, and three example stories.

    python bench/tinytales.py                  # 100k stories, seed 0
    python bench/tinytales.py --n 20000 --seed 3 --bias 1.0

Prints stories per second, how many of the n stories and of their sentences are
distinct, the corpus's entropy floor in bits per character on a ~1 MB sample (the lowest
loss any model can reach on it), the character vocabulary, and three stories with their
summary, questions, label and Spanish translation.
"""

from __future__ import annotations

import argparse
import time

from llmkit.data.tinytales import SEPARATOR, entropy_floor_bits_per_char, generate_stories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="stories to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bias", type=float, default=0.0)
    args = parser.parse_args()

    start = time.perf_counter()
    stories = generate_stories(args.n, seed=args.seed, bias=args.bias)
    seconds = time.perf_counter() - start
    print(f"generated {args.n:,} stories in {seconds:.2f} s: {args.n / seconds:,.0f} stories/s")

    sentences = [sentence for s in stories for sentence in s.sentences]
    distinct = len({s.text for s in stories})
    print(f"distinct stories: {distinct:,} of {args.n:,} ({distinct / args.n:.4%})")
    print(f"distinct sentences: {len(set(sentences)):,} of {len(sentences):,}")

    sample, chars = [], 0
    for s in stories:  # the first ~1 MB of the corpus tinytales_text writes
        if chars >= 1_000_000:
            break
        sample.append(s)
        chars += len(s.text) + len(SEPARATOR)
    floor = entropy_floor_bits_per_char(sample)
    bits = -sum(s.log_prob for s in sample) / 0.6931471805599453 / len(sample)
    print(f"entropy floor on {chars:,} characters ({len(sample):,} stories): "
          f"{floor:.4f} bits/char ({bits:.1f} bits/story, {chars / len(sample):.0f} chars/story)")
    english = sorted(set("".join(s.text for s in sample)) | set(SEPARATOR))
    spanish = sorted(set("".join(s.translation for s in sample[:5000])))
    print(f"characters: {len(english)} in English (with the separator), "
          f"{len(spanish)} in Spanish")

    for s in stories[:3]:
        print("\n" + "-" * 80)
        print(s.text)
        print(f"\nsummary: {s.summary}\nlabel: {s.label}   log_prob: {s.log_prob:.3f}")
        for question, answer in s.qa:
            print(f"  Q: {question}  A: {answer}")
        print(f"\nSpanish: {s.translation}")


if __name__ == "__main__":
    main()
