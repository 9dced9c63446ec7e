"""No hand-typed results in the book's prose: every result-like number comes from a record.

A chapter (``book/*.md``) may state a measured number only through a glue reference
(``{glue:text}`studies/NN_x.ipynb::name:fmt```) or a table computed on a study page. This test
strips what is not prose (code, math, roles such as ``{cite:p}``/``{glue:text}``/``{doc}``,
directive arguments and options, link targets, inline code, comments) and then flags every
number that looks like a result:

- a decimal (``0.89``, ``91.5``), a percentage (``12 %``, ``12 percent``), a speed-up (``1.4x``,
  ``2×``), an integer of three or more digits or with a thousands separator (``768``, ``1,000``);
- any integer followed by a count or time unit (``3 seeds``, ``400 rows``, ``2 points``,
  ``5 CPU-hours``), and a spelled-out count of seeds, runs or steps (``three seeds``,
  ``single runs``) because the runs' counts are parameters of a profile and get glued.

Small bare integers (``6 layers`` is caught only through the allow-list below if it carries a unit,
``Eq. 3``, ``two claims``) are not results and are left alone. Numbers inside identifiers
(``all-MiniLM-L6-v2``, ``SST-2``, ``T5``, ``Multi30K``, ``fp16``) are names, not numbers.

What the text may legitimately state (a paper's or its code's constant, a model dimension, a
parameter of a method when it describes a setting) is in ``ALLOWED``: a short phrase that must
surround the number where it occurs, with the source. A phrase allows only the numbers inside its
own span, so ``hidden size 384`` does not allow every 384. Every entry must still be used, so the
list cannot grow stale.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

# phrase (matched literally, case-sensitive, in the stripped prose line) -> why the number in it is
# not a result. Keep it small: a result belongs in a glue reference, not here.
ALLOWED = {
    # statistics and rule parameters of the study itself (mpstudy.stats, mpstudy.studies.*.claims)
    "95 % interval": "the confidence level of every interval in the book (mpstudy.stats)",
    "keeps at least 99 % of the dense score": "the offline-SVD criterion (mpstudy/studies/offline_svd/recipe.py)",
    "threshold (1 point)": "MPOP claims' margin: within 1 point (mpstudy/studies/mpop/claims.py)",
    "within 5 %": "budget tolerance every method must meet (mpstudy.factorize / compress_to_budget)",
    "far more than 5 %": "the same budget tolerance",
    "gives rank 7, CR 27.4, more than 5 % off": "worked arithmetic: 384*384/(7*768) = 27.4 against the 5 % tolerance",
    "budget of 164 numbers": "worked arithmetic: 64*64/25 = 163.8",
    "store 128 (rank 1) or 256 (rank 2)": "worked arithmetic: rank r of a 64 x 64 matrix stores 128 r",
    "85 → 384": "decoder widths derived by hand from the sizing rule (tests/test_offline_units.py)",
    "(for 384:": "MiniLM's hidden size, the example's dimension",
    # model dimensions (config.json: hidden_size)
    "hidden size 384": "all-MiniLM-L6-v2 hidden_size",
    "384-wide": "all-MiniLM-L6-v2 hidden_size",
    # the papers and their code, as the methods digest reads them (../shared/research/methods-digest.md)
    '"0.4x" and inference 1.45 times faster': "Noach and Goldberg 2020, abstract",
    'abstract\'s "0.4x"': "Noach and Goldberg 2020, abstract",
    "padding id (64171)": "the MarianMT port's hard-coded padding id (kene111/matrix-decomposition)",
    '"91 % fewer fine-tuned parameters"': "Liu et al. 2021 (MPOP), abstract",
    "bonds capped at 240": "MPOP's ALBERT set-up: word-embedding cap 240 (lpyhdzx/MPOP)",
    "unbalanced 768 factorization": "MPOP's code factorizes 768 as [4,4,4,4,3]",
    "caps of 384 (linear) and 256 (attention)": "MPOP's code: default caps 384 and 256",
    "Lab, 2021)": "year of the LoBERT repository (bjpark0805/LoBERT)",
    "runs 10,000 steps at learning rate 0.01": "LoBERT FALCON SGD fit: SGD(lr=0.01), 10,000 steps",
    "steps 4,000 and 7,000": "LoBERT FALCON SGD fit: lr divided by 10 at steps 4000 and 7000",
    "rank 306 keeps 49.8 %": "LoBERT ffn_svd rank 306 of 768x3072: 306*3840/(768*3072) = 49.8 %",
    "rank 307": "half of 768*3072/(768+3072) = 614.4, floored: the rank mpstudy's keep=0.5 gives",
    "grid 10 to 1000": "LoBERT's beta grid",
    "The 24-run grid": "LoBERT: 3 learning rates x 4 betas x 2 normalizations = 24 runs per task/mode",
    "weights (about 0.04)": "std of BERT-base weights (the digest's check of LoBERT's fit)",
    "at most 100 sweeps": "TensorLy tucker default n_iter_max=100, LoBERT's setting",
    "sequence length 128": "LoBERT's MRPC set-up (max_seq_length 128), the gpu profile",
    "30 epochs on a GPU": "Banaei et al.'s autoencoder training (their code)",
    "(200 on a mode of size 64": "Banaei et al.'s code: invalid Tucker ranks",
    # references by number
    "issues 19625 and 17886": "huggingface/transformers issue numbers",
    "requests 19097 and 20106": "huggingface/transformers pull-request numbers",
    "2016 Flickr test set": "Multi30K's test2016 split (a name)",
}

UNITS = (
    r"steps?|rows?|seeds?|runs?|examples?|sentences?|epochs?|iterations?|batches|trials?|"
    r"CPU[- ]hours?|GPU[- ]hours?|hours?|h|minutes?|min|seconds?|s|ms|points?|"
    r"parameters|params|tokens|cells|configurations|times faster"
)
SPELLED = r"one|two|three|four|five|six|seven|eight|nine|ten|single"

NUMBER = re.compile(
    r"(?<![\w.\-/@#$])"  # not part of an identifier, a version, a path or a label
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<suffix>\s?(?:%|percent\b|[x×](?![\w])(?!\s*\d)))?"
    r"(?![\w.]\w|[\w])"  # followed by neither a letter nor a further digit group
)
UNIT_AFTER = re.compile(r"\s*(?:-|\s)?(?:" + UNITS + r")\b")
SPELLED_COUNT = re.compile(r"\b(?:" + SPELLED + r")\s+(?:seeds?|runs?|steps?)\b", re.I)

LITERAL_DIRECTIVES = {
    "math", "code", "code-block", "code-cell", "glue", "glue:any", "glue:figure", "glue:math",
    "eval-rst", "bibliography", "toctree", "raw", "literalinclude", "tableofcontents", "autodoc",
    "automodule", "autoclass", "autofunction", "mermaid",
}


def prose_lines(text):
    """Yield (line number, prose) for a MyST page, with everything that is not prose blanked out."""
    fence = None  # (marker, literal?) of the open fence
    in_math = False
    in_comment = False
    lines = text.splitlines()
    start = 0
    if lines and lines[0].strip() == "---":  # front matter
        for i in range(1, len(lines)):
            if lines[i].strip() == "---":
                start = i + 1
                break
    for number, line in enumerate(lines[start:], start=start + 1):
        stripped = line.strip()
        if in_comment:
            if "-->" in line:
                in_comment = False
            continue
        if fence is not None:
            marker, literal = fence
            if stripped.startswith(marker[0] * len(marker)) and stripped.strip(marker[0]) == "":
                fence = None
            elif not literal and not stripped.startswith(":"):
                yield number, _strip_inline(line)
            continue
        if in_math:
            if re.search(r"\$\$(\s*\([\w:-]+\))?$", stripped):  # "$$" or a labelled "$$ (eq-name)"
                in_math = False
            continue
        opened = re.match(r"^\s*(`{3,}|~{3,}|:{3,})\s*(\{([\w:-]+)\})?\s*(\w*)", line)
        if opened:
            name = opened.group(3)
            literal = name is None or name in LITERAL_DIRECTIVES  # a plain ``` block is code
            if opened.group(1)[0] == ":" and name is None:
                literal = False
            fence = (opened.group(1), literal)
            continue  # the opening line holds the directive's argument
        if stripped.startswith("$$"):
            if not (len(stripped) > 2 and stripped.endswith("$$")):
                in_math = True
            continue
        if stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
            continue
        if stripped.startswith("%") or re.match(r"^\(.+\)=$", stripped) or re.match(r"^\[.+\]:\s", stripped):
            continue  # MyST comment, target label, link definition
        yield number, _strip_inline(line)


def _strip_inline(line):
    line = re.sub(r"\{[\w:.-]+\}`[^`]*`", " ", line)  # roles: cite, doc, glue:text, math, eq, ref
    line = re.sub(r"(`+)[^`].*?\1", " ", line)  # inline code
    line = re.sub(r"\$[^$]+\$", " ", line)  # inline math
    line = re.sub(r"\]\([^)]*\)", "]", line)  # link targets
    line = re.sub(r"<https?://[^>]*>|https?://\S+", " ", line)
    line = re.sub(r"<!--.*?-->", " ", line)
    return line


def allowed(prose, start, end, allow=ALLOWED, used=None):
    """Whether the number at ``prose[start:end]`` lies inside an allow-listed phrase."""
    for phrase in allow:
        for m in re.finditer(re.escape(phrase), prose):
            if m.start() <= start and end <= m.end():
                if used is not None:
                    used.add(phrase)
                return True
    return False


def result_numbers(prose):
    """The (start, end, text) of every result-like number in one line of stripped prose."""
    found = []
    for m in NUMBER.finditer(prose):
        num, suffix = m.group("num"), m.group("suffix")
        digits = num.replace(",", "")
        result_like = (
            "." in num or "," in num or suffix or len(digits.split(".")[0]) >= 3
            or UNIT_AFTER.match(prose, m.end())
        )
        if result_like:
            found.append((m.start(), m.end(), m.group(0).strip()))
    for m in SPELLED_COUNT.finditer(prose):
        found.append((m.start(), m.end(), m.group(0)))
    return found


def scan(text, allow=ALLOWED, used=None):
    """(line number, number) of every result-like number in a page that no allowed phrase covers.

    A phrase may wrap: it is looked for in this prose line joined to its neighbours."""
    hits = []
    lines = list(prose_lines(text))
    for i, (number, prose) in enumerate(lines):
        before = lines[i - 1][1].strip() + " " if i > 0 else ""
        after = " " + lines[i + 1][1].strip() if i + 1 < len(lines) else ""
        context = before + prose.strip() + after
        shift = len(before) - (len(prose) - len(prose.lstrip()))
        for start, end, value in result_numbers(prose):
            if not allowed(context, start + shift, end + shift, allow, used):
                hits.append((number, value))
    return hits


def test_the_scanner_flags_results_and_skips_markup():
    page = "\n".join([
        "# A chapter",
        "The student keeps 0.89 of the score and runs 1.4x faster, 12 % fewer weights.",
        "It trained for 1,000 steps on 400 rows with 3 seeds; these are single runs.",
        "Glued: {glue:text}`studies/02_lobert.ipynb::teacher_score:s`, cited {cite:p}`park2021lobert`.",
        "Names are not numbers: all-MiniLM-L6-v2 on SST-2 and Multi30K, T5, fp16, `keep=0.5`.",
        "Math is not prose: $r < 614.4$ and a link [the page](studies/00_offline_svd.ipynb).",
        "A small count (two claims, Eq. 3, layer 6) is not a result; hidden size 384 is allowed.",
        "$$",
        "W = 0.5 \\cdot 768",
        "$$ (eq-example)",
        "```python",
        "report = mpstudy.compress(model, 'svd', keep=0.5)  # 22.7 M",
        "```",
        "```{note}",
        "A note's body is prose: 91.5 points.",
        "```",
        "But 384 alone is not allowed, while a hidden",
        "size 384 that wraps is.",
    ])
    hits = scan(page, allow={"hidden size 384": "dimension"})
    assert [value for _, value in hits] == [
        "0.89", "1.4x", "12 %", "1,000", "400", "3", "single runs", "91.5", "384",
    ]
    assert [line for line, _ in hits] == [2, 2, 2, 3, 3, 3, 3, 15, 17]


def test_every_number_in_the_chapters_comes_from_a_record():
    used = set()
    problems = []
    for page in sorted(BOOK.glob("*.md")):
        for line, value in scan(page.read_text(), used=used):
            problems.append(f"{page.relative_to(ROOT)}:{line}: {value}")
    assert problems == [], (
        "hand-typed result-like numbers (glue them from a study notebook, rewrite without the number, "
        "or allow-list a constant with its source in tests/test_book_numbers.py):\n" + "\n".join(problems)
    )
    assert sorted(set(ALLOWED) - used) == [], "allow-list entries no chapter uses any more"
