"""Small GSM8K- and MATH-format sample files (problems written for cohort), for tests and examples.

``python -m cohort.data.samples DIRECTORY`` writes them where the example configs expect them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (question, worked answer ending in "#### <answer>")
GSM8K_SAMPLES: tuple[tuple[str, str], ...] = (
    ("A bakery bakes 14 loaves every morning and 9 every evening. How many loaves does it bake in 6 days?",
     "Each day it bakes 14 + 9 = <<14+9=23>>23 loaves.\nIn 6 days it bakes 23 * 6 = <<23*6=138>>138 loaves.\n#### 138"),
    ("Mira has 3 boxes with 12 pencils in each box. She gives 15 pencils to her classmates. How many pencils does she have left?",
     "Mira starts with 3 * 12 = <<3*12=36>>36 pencils.\nShe has 36 - 15 = <<36-15=21>>21 pencils left.\n#### 21"),
    ("A train travels at 80 kilometres per hour for 2.5 hours. How many kilometres does it travel?",
     "It travels 80 * 2.5 = <<80*2.5=200>>200 kilometres.\n#### 200"),
    ("Theo saves $35 every week. How many weeks does he need to save $1,050?",
     "He needs 1050 / 35 = <<1050/35=30>>30 weeks.\n#### 30"),
    ("A garden has 8 rows of 15 tulips. One quarter of the tulips are red. How many tulips are not red?",
     "There are 8 * 15 = <<8*15=120>>120 tulips.\n120 / 4 = <<120/4=30>>30 of them are red.\nSo 120 - 30 = <<120-30=90>>90 are not red.\n#### 90"),
    ("A museum ticket costs $12. A family buys 5 tickets and pays with a $100 bill. How much change do they get?",
     "The tickets cost 5 * 12 = <<5*12=60>>60 dollars.\nThe change is 100 - 60 = <<100-60=40>>40 dollars.\n#### 40"),
    ("A school has 480 students and 5/8 of them ride the bus. How many students do not ride the bus?",
     "480 * 5 / 8 = <<480*5/8=300>>300 students ride the bus.\n480 - 300 = <<480-300=180>>180 students do not.\n#### 180"),
    ("Lena reads 24 pages a day. How many days does she need to read a book of 312 pages?",
     "She needs 312 / 24 = <<312/24=13>>13 days.\n#### 13"),
    ("A farmer has 17 cows. He buys twice as many sheep as he has cows, then sells 9 of the sheep. How many animals does he have now?",
     "He buys 17 * 2 = <<17*2=34>>34 sheep and keeps 34 - 9 = <<34-9=25>>25 of them.\nHe has 17 + 25 = <<17+25=42>>42 animals.\n#### 42"),
    ("A shop sells pens at 3 for $2. How much do 27 pens cost?",
     "27 pens are 27 / 3 = <<27/3=9>>9 groups of three.\nThey cost 9 * 2 = <<9*2=18>>18 dollars.\n#### 18"),
    ("A factory packs 125 bottles into each crate and ships 10 crates a day. How many bottles does it ship in a day?",
     "It ships 125 * 10 = <<125*10=1250>>1,250 bottles a day.\n#### 1,250"),
    ("Sam ran 4.5 km on Monday and 3 km more than that on Tuesday. How many kilometres did he run on the two days together?",
     "On Tuesday he ran 4.5 + 3 = <<4.5+3=7.5>>7.5 km.\nTogether he ran 4.5 + 7.5 = <<4.5+7.5=12>>12 km.\n#### 12"),
    ("A recipe needs 3 eggs for 12 cookies. How many eggs are needed for 60 cookies?",
     "60 cookies are 60 / 12 = <<60/12=5>>5 batches.\nThey need 5 * 3 = <<5*3=15>>15 eggs.\n#### 15"),
    ("A jacket costs $80. It is on sale for 25% off. What is the sale price in dollars?",
     "The discount is 80 * 25 / 100 = <<80*25/100=20>>20 dollars.\nThe sale price is 80 - 20 = <<80-20=60>>60 dollars.\n#### 60"),
    ("A rope is 9 metres long. How many whole pieces of 1.2 metres can be cut from it?",
     "9 / 1.2 = 7.5, so only 7 whole pieces fit (7 * 1.2 = <<7*1.2=8.4>>8.4 metres).\n#### 7"),
    ("Ruth scored 78, 85, 92 and 81 on four quizzes. What is her average score?",
     "Her scores add up to 78 + 85 + 92 + 81 = <<78+85+92+81=336>>336.\nThe average is 336 / 4 = <<336/4=84>>84.\n#### 84"),
    ("Jo buys 4 notebooks at $2.75 each. How many dollars does she spend?",
     "She spends 4 * 2.75 = <<4*2.75=11>>11 dollars.\n#### 11"),
    ("A car park has 6 levels with 45 spaces on each level. 187 cars are parked. How many spaces are free?",
     "There are 6 * 45 = <<6*45=270>>270 spaces.\n270 - 187 = <<270-187=83>>83 are free.\n#### 83"),
    ("At 6 am the temperature was 4 degrees. By noon it had risen 11 degrees, and by midnight it had fallen 18 degrees from the noon value. What was the temperature at midnight?",
     "At noon it was 4 + 11 = <<4+11=15>>15 degrees.\nAt midnight it was 15 - 18 = <<15-18=-3>>-3 degrees.\n#### -3"),
    ("A printer prints 18 pages a minute. How many pages does it print in 2 hours?",
     "2 hours are 2 * 60 = <<2*60=120>>120 minutes.\nIt prints 18 * 120 = <<18*120=2160>>2,160 pages.\n#### 2,160"),
    ("Ava is 3 times as old as her brother, who is 7. What will the sum of their ages be in 5 years?",
     "Ava is 3 * 7 = <<3*7=21>>21.\nIn 5 years they will be 26 and 12, so the sum is 26 + 12 = <<26+12=38>>38.\n#### 38"),
    ("A cinema has 22 rows of 18 seats. It is three quarters full. How many people are in the cinema?",
     "There are 22 * 18 = <<22*18=396>>396 seats.\n396 * 3 / 4 = <<396*3/4=297>>297 people are there.\n#### 297"),
    ("Three friends share a bill of $22.50 equally. How many dollars does each friend pay?",
     "Each pays 22.50 / 3 = <<22.50/3=7.5>>7.5 dollars.\n#### 7.5"),
    ("A car uses 6 litres of fuel per 100 km. How many litres does it need for 350 km?",
     "350 km is 350 / 100 = <<350/100=3.5>>3.5 hundreds of kilometres.\nIt needs 3.5 * 6 = <<3.5*6=21>>21 litres.\n#### 21"),
    ("Nina plants 5 seeds in each of 14 pots, and 80% of the seeds sprout. How many seeds sprout?",
     "She plants 5 * 14 = <<5*14=70>>70 seeds.\n70 * 80 / 100 = <<70*80/100=56>>56 of them sprout.\n#### 56"),
)

# (problem, worked solution with the answer in its last \boxed{}, level, type)
MATH_SAMPLES: tuple[tuple[str, str, str, str], ...] = (
    (r"Compute $\frac{3}{4} + \frac{5}{6}$.",
     r"With the common denominator 12, $\frac{9}{12} + \frac{10}{12} = \boxed{\frac{19}{12}}$.", "Level 1", "Prealgebra"),
    (r"Solve for $x$: $3x - 7 = 11$.",
     r"Adding 7 gives $3x = 18$, so $x = \boxed{6}$.", "Level 1", "Algebra"),
    (r"Find the positive solution of $x^2 - 5x - 14 = 0$.",
     r"Factoring, $(x - 7)(x + 2) = 0$, so $x = 7$ or $x = -2$. The positive solution is $\boxed{7}$.", "Level 2", "Algebra"),
    (r"Simplify $\sqrt{50}$.",
     r"$\sqrt{50} = \sqrt{25 \cdot 2} = \boxed{5\sqrt{2}}$.", "Level 1", "Prealgebra"),
    (r"What is the sum of the interior angles of a hexagon, in degrees?",
     r"A polygon with $n$ sides has angle sum $(n-2) \cdot 180^\circ$; for $n = 6$ this is $\boxed{720}$.", "Level 1", "Geometry"),
    (r"Let $f(x) = 2x^2 - 3x + 1$. Compute $f(-2)$.",
     r"$f(-2) = 2 \cdot 4 + 6 + 1 = \boxed{15}$.", "Level 1", "Algebra"),
    (r"How many positive divisors does $72$ have?",
     r"$72 = 2^3 \cdot 3^2$, so it has $(3+1)(2+1) = \boxed{12}$ positive divisors.", "Level 2", "Number Theory"),
    (r"Evaluate $\log_2 64$.",
     r"Since $2^6 = 64$, $\log_2 64 = \boxed{6}$.", "Level 1", "Algebra"),
    (r"Find the remainder when $2^{10}$ is divided by $7$.",
     r"$2^3 = 8 \equiv 1 \pmod 7$, so $2^{10} = (2^3)^3 \cdot 2 \equiv 2 \pmod 7$. The remainder is $\boxed{2}$.", "Level 2", "Number Theory"),
    (r"Two fair six-sided dice are rolled. What is the probability that the sum is $7$?",
     r"Six of the $36$ equally likely outcomes sum to $7$, so the probability is $\frac{6}{36} = \boxed{\frac{1}{6}}$.", "Level 2", "Counting & Probability"),
    (r"Solve $|2x - 3| < 5$. Give your answer in interval notation.",
     r"$-5 < 2x - 3 < 5$ gives $-2 < 2x < 8$, so $-1 < x < 4$, that is $x \in \boxed{(-1, 4)}$.", "Level 3", "Algebra"),
    (r"What is the distance between the points $(1, 2)$ and $(4, 6)$?",
     r"The distance is $\sqrt{3^2 + 4^2} = \sqrt{25} = \boxed{5}$.", "Level 1", "Algebra"),
    (r"Expand $(x + 3)^2$.",
     r"$(x + 3)^2 = x^2 + 2 \cdot 3x + 9 = \boxed{x^2 + 6x + 9}$.", "Level 1", "Algebra"),
    (r"The arithmetic sequence $4, 11, 18, \ldots$ continues. What is its $20$th term?",
     r"The common difference is $7$, so the $20$th term is $4 + 19 \cdot 7 = \boxed{137}$.", "Level 2", "Algebra"),
    (r"Compute $\binom{8}{3}$.",
     r"$\binom{8}{3} = \frac{8 \cdot 7 \cdot 6}{3 \cdot 2 \cdot 1} = \boxed{56}$.", "Level 1", "Counting & Probability"),
    (r"What is the slope of the line through $(-2, 5)$ and $(4, -1)$?",
     r"The slope is $\frac{-1 - 5}{4 - (-2)} = \frac{-6}{6} = \boxed{-1}$.", "Level 2", "Algebra"),
    (r"What is the area of a circle with diameter $10$? Express your answer in terms of $\pi$.",
     r"The radius is $5$, so the area is $\pi \cdot 5^2 = \boxed{25\pi}$.", "Level 1", "Geometry"),
    (r"Write $0.\overline{36}$ as a common fraction in lowest terms.",
     r"$0.\overline{36} = \frac{36}{99} = \boxed{\frac{4}{11}}$.", "Level 2", "Number Theory"),
    (r"What is the least common multiple of $18$ and $24$?",
     r"$18 = 2 \cdot 3^2$ and $24 = 2^3 \cdot 3$, so the least common multiple is $2^3 \cdot 3^2 = \boxed{72}$.", "Level 2", "Number Theory"),
    (r"Find all real numbers $x$ such that $x^2 = 2x$. List them separated by commas.",
     r"$x^2 - 2x = x(x - 2) = 0$, so $x = \boxed{0, 2}$.", "Level 2", "Algebra"),
    (r"Rationalize the denominator of $\frac{1}{\sqrt{3}}$.",
     r"Multiplying the numerator and denominator by $\sqrt{3}$ gives $\boxed{\frac{\sqrt{3}}{3}}$.", "Level 2", "Algebra"),
    (r"If $2^a = 32$ and $3^b = 81$, what is $a + b$?",
     r"$32 = 2^5$ and $81 = 3^4$, so $a + b = 5 + 4 = \boxed{9}$.", "Level 1", "Algebra"),
    (r"The sum of two numbers is $30$ and their difference is $8$. What is their product?",
     r"The numbers are $\frac{30 + 8}{2} = 19$ and $\frac{30 - 8}{2} = 11$, whose product is $\boxed{209}$.", "Level 2", "Algebra"),
    (r"Evaluate $\sum_{k=1}^{10} k$.",
     r"$\sum_{k=1}^{10} k = \frac{10 \cdot 11}{2} = \boxed{55}$.", "Level 1", "Intermediate Algebra"),
    (r"Simplify $\dfrac{\frac{1}{2}}{\frac{3}{4}}$.",
     r"Dividing by $\frac{3}{4}$ is multiplying by $\frac{4}{3}$: $\frac{1}{2} \cdot \frac{4}{3} = \boxed{\frac{2}{3}}$.", "Level 1", "Prealgebra"),
)


def write_sample_math_files(directory: str | Path) -> dict[str, Path]:
    """Write ``gsm8k_sample.jsonl`` and ``math_sample.jsonl`` into ``directory`` (created if needed).

    Returns ``{"gsm8k": path, "math": path}``. GSM8K rows are ``{question, answer}``; MATH rows
    ``{problem, solution, level, type}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gsm8k_rows = [{"question": question, "answer": answer} for question, answer in GSM8K_SAMPLES]
    math_rows = [
        {"problem": problem, "solution": solution, "level": level, "type": kind}
        for problem, solution, level, kind in MATH_SAMPLES
    ]
    paths = {"gsm8k": directory / "gsm8k_sample.jsonl", "math": directory / "math_sample.jsonl"}
    for name, rows in (("gsm8k", gsm8k_rows), ("math", math_rows)):
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m cohort.data.samples DIRECTORY``: write the sample files and print their paths."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cohort.data.samples DIRECTORY", file=sys.stderr)
        return 2
    for path in write_sample_math_files(args[0]).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
