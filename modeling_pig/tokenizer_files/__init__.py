"""The real CLIP BPE vocabulary, shipped as package data so that ``PIGProcessor()`` works offline.

``vocab.json`` and ``merges.txt`` here are derived from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` by
:mod:`modeling_pig.tokenizer_files.derive` (``python -m modeling_pig.tokenizer_files.derive GZ_PATH``).
"""

from pathlib import Path

TOKENIZER_FILES_DIR = Path(__file__).resolve().parent
VOCAB_FILE = TOKENIZER_FILES_DIR / "vocab.json"
MERGES_FILE = TOKENIZER_FILES_DIR / "merges.txt"
