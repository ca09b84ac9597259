#!/usr/bin/env python3
"""tokenizer_golden.py: make the tokenizer golden files (run by hand, never in CI).

Reference: HF `tokenizers`, built from the GGUF file's own vocab and merges with
SmolLM2's pre-tokenizer (Sequence[Digits(individual_digits=True),
ByteLevel(add_prefix_space=False, use_regex=True)]), a ByteLevel decoder and the
file's control tokens added as special tokens. (transformers' GGUF loader drops
the digit split, so it is not used.) Checks a few third-party ids first.

Writes:
  tests/golden/tokenizer_hard.jsonl  the hand-picked strings, {"s": ...} a line
  tests/golden/tokenizer_ids.txt     "TAG id id ..." a line; TAG is q<i>/a<i>
                                     (GSM8K test line i, question/answer), h<i>
                                     (hard string i), chat (the chat prompt of
                                     "hello"); a first "#" comment line
  tests/golden/tokenizer_pre_ids.txt the same vocab and merges under the qwen2
                                     (tags Qh<i>, Qq<i>) and llama3 (Lh<i>, Lq<i>:
                                     ignore_merges too) pre-tokenizers, for the
                                     hard strings and the first 200 GSM8K questions
Usage: /tmp/gv/bin/python tests/golden/tokenizer_golden.py [MODEL.gguf] [DATA_DIR]
"""
import json
import os
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
model_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
data_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "../shared/data")

r = gguf.GGUFReader(model_path)


def arr_str(key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def arr_int(key):
    f = r.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


tokens = arr_str("tokenizer.ggml.tokens")
types = arr_int("tokenizer.ggml.token_type")
merges = arr_str("tokenizer.ggml.merges")
assert bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"

vocab = {t: i for i, t in enumerate(tokens)}
tk = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges]))
tk.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
])
tk.decoder = decoders.ByteLevel()
tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                       for i in range(len(tokens)) if types[i] == 3])


def enc(s):
    return tk.encode(s, add_special_tokens=False).ids


# third-party ids (facts file section 6)
assert enc("The capital of France is") == [504, 3575, 282, 4649, 314]
assert enc("def fibonacci(n):") == [1604, 3987, 46477, 24, 94, 727]
assert enc("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35]
assert enc("  multiple   spaces") == [216, 2701, 256, 5600]
assert enc("\n") == [198]
assert enc("Hello") == [19556]
chat = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
chat_ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
            19712, 8182, 2, 198, 1, 4093, 198, 28120, 2, 198, 1, 520, 9531, 198]
assert enc(chat) == chat_ids

hard = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "   \n\n   \n",
    "a  b   c    d\t\te",
    " \t \n \r\n x",
    "trailing spaces   ",
    "Hello 😀 world 🎉🎉 👨‍👩‍👧‍👦 family",
    "🇫🇷🇯🇵 flags and ❤️ hearts",
    "日本語のテキストです。中文文本，还有한국어 텍스트.",
    "Ελληνικά и русский текст, עברית, العربية",
    "e\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353 combining",
    "Å vs A\u030a (NFC vs NFD)",
    "1234567890 3.14159 -42 1e10 0x1F 1,000,000",
    "٣٤٥ ½ ¾ Ⅻ ³ ²⁵ full-width ０１２",
    "$12.50 + 7% = €13.38; 2+2=4",
    "def f(x):\n    return x ** 2  # square\n\n\tif x>0: pass\n",
    "int main(void) { printf(\"%d\\n\", a[i++]); return 0; }",
    "<|im_start|>user\nhi<|im_end|>",
    "text<|endoftext|>more<|im_end|><|im_start|>",
    "<|im_start|<|im_end|>> <<|im_start|>>",
    "<|im_start",
    "<|im_end|",
    "|>im_end<|",
    "<repo_name><reponame><file_sep>x<filename>y<gh_stars>10",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "I'm you're we've they'll he'd it's DON'T I'M",
    "'s 't 're 've 'm 'll 'd '",
    "!!!???...,,,;;;:::---___===+++",
    "https://example.com/path?q=1&r=2#frag",
    "user@example.com <tag attr=\"v\">&amp;</tag>",
    "\\x00 \\u1234 \\\\ \\n literal backslashes",
    "nul\u0000byte and bell\u0007 and esc\u001b[0m",
    "soft\u00adhyphen zero\u200bwidth bom\ufeff nbsp\u00a0x nnbsp\u202fy",
    "ideographic\u3000space line\u2028sep para\u2029sep nel\u0085x",
    "mongolian\u180evowel sep and \u001c\u001d\u001e\u001f separators",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝟙𝟚𝟛 astral",
    "\U0010FFFD\U000E0001 private and tag",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    " " * 100 + "x",
    "\n" * 40,
    "ThisIsCamelCase and snake_case_name and kebab-case-name",
    "ÀÉÎÕÜ àéîõü ß ſ ﬁ ﬂ Ǆ ǅ ǆ",
    "Question:\nJanet’s ducks lay 16 eggs per day.\nAnswer:\nLet's think step by step.\n",
    "«quotes» “curly” ‘single’ — en–dash … ellipsis",
    "tab\tseparated\tvalues\n1\t2\t3",
    "math: ∀x∈ℝ, x²≥0 ⇒ √(x²)=|x| ∑∫∂",
    "mixed123abc456def 7a8b9c",
    "x!\u0004!y \u0006\u0006 z\u0013\u0014\u0016 bytes with no token",
    "END.",
    # letters and numbers of Unicode 15-16 (HF: \p{L}/\p{N}; PCRE2 10.42, Unicode 14: unassigned)
    "\U00031350't \U0001e4d0\U0001e4d1 x\U0001e4f0\U0001e4f1 \U00011f04\U00011f50 \ua7cb'd \U0002ebf0! \U00010d4a\U00010d40",
]
assert len(hard) >= 50, len(hard)

out_ids = []
with open(os.path.join(data_dir, "gsm8k_test.jsonl"), encoding="utf-8") as f:
    for i, line in enumerate(f):
        rec = json.loads(line)
        out_ids.append(("q%d" % i, enc(rec["question"])))
        out_ids.append(("a%d" % i, enc(rec["answer"])))
        for s in (rec["question"], rec["answer"]):
            assert tk.decode(enc(s), skip_special_tokens=False) == s
for i, s in enumerate(hard):
    out_ids.append(("h%d" % i, enc(s)))
out_ids.append(("chat", chat_ids))

with open(os.path.join(here, "tokenizer_hard.jsonl"), "w", encoding="utf-8") as f:
    for s in hard:
        f.write(json.dumps({"s": s}, ensure_ascii=True) + "\n")
with open(os.path.join(here, "tokenizer_ids.txt"), "w", encoding="ascii") as f:
    f.write("# tokenizer golden ids (tests/golden/tokenizer_golden.py, tokenizers %s)\n"
            % __import__("tokenizers").__version__)
    for tag, ids in out_ids:
        f.write(tag + ("" if not ids else " " + " ".join(map(str, ids))) + "\n")
# other pre-tokenizers: HF Split(Regex, isolated) + ByteLevel(use_regex=False), as
# Qwen2's and Llama-3's tokenizer.json declare them
from tokenizers import Regex  # noqa: E402
PRE = {
    "Q": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", False),
    "L": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", True),
}
questions = [json.loads(l)["question"] for l in open(os.path.join(data_dir, "gsm8k_test.jsonl"), encoding="utf-8")][:200]
with open(os.path.join(here, "tokenizer_pre_ids.txt"), "w", encoding="ascii") as f:
    f.write("# other pre-tokenizers on SmolLM2's vocab (tests/golden/tokenizer_golden.py)\n")
    for tag, (pat, ign) in PRE.items():
        t2 = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges], ignore_merges=ign))
        t2.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        t2.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                               for i in range(len(tokens)) if types[i] == 3])
        for kind, strs in (("h", hard), ("q", questions)):
            for i, s in enumerate(strs):
                ids = t2.encode(s, add_special_tokens=False).ids
                f.write("%s%s%d%s\n" % (tag, kind, i, "" if not ids else " " + " ".join(map(str, ids))))

print("wrote %d id lines, %d hard strings" % (len(out_ids), len(hard)))
