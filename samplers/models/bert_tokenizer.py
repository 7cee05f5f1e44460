"""A BERT WordPiece tokenizer in pure Python, reading a local `vocab.txt`.

ImageReward tokenizes prompts with `transformers.BertTokenizer.from_pretrained('bert-base-uncased')` plus two added
special tokens (`[DEC]` as bos, `[ENC]` as an additional special token). That call needs a model hub, and on current
transformers releases an offline construction silently returns a tokenizer that maps every word to `[UNK]`. This
module reproduces the slow `BertTokenizer` of transformers 4.x exactly (clean text, CJK spacing, NFC, lower case,
accent stripping, punctuation splitting, greedy longest-match WordPiece, special tokens never split) from the
vocabulary file alone, so the pack never touches the network nor transformers.
"""
import unicodedata

from .files import ModelFileError, load_json_object

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Added by ImageReward's BLIP `init_tokenizer()` on top of the BERT vocabulary, in this order.
BLIP_ADDED_TOKENS = ("[DEC]", "[ENC]")


def load_vocab(path):
    """`vocab.txt` -> {token: id}; one token per line, the id is the line number (a later duplicate wins)."""
    vocab = {}
    try:
        with open(path, "r", encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                vocab[line.rstrip("\n")] = index
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: not a UTF-8 text file; expected a WordPiece vocabulary (one token per "
                             "line). Download vocab.txt again from the bert-base-uncased repository on Hugging "
                             "Face.") from None
    if not vocab:
        raise ValueError(f"vocab.txt at {path} is empty; expected one WordPiece token per line")
    return vocab


def _is_whitespace(char):
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    code = ord(char)
    # BERT treats every non-alphanumeric ASCII character as punctuation ("$", "^", "`", ...).
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(code):
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


class BertTokenizer:
    """BERT basic + WordPiece tokenization with ImageReward's special tokens.

    vocab: {token: id} (see `load_vocab`). `added_tokens` that are not in the vocabulary get the ids
    len(vocab), len(vocab) + 1, ... in order, as transformers' `add_special_tokens` assigns them.
    """

    def __init__(self, vocab, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True,
                 added_tokens=BLIP_ADDED_TOKENS, max_input_chars_per_word=100):
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"vocab.txt lacks the BERT special tokens {missing}; expected a BERT vocabulary "
                             "such as bert-base-uncased's")
        self.vocab = dict(vocab)
        next_id = len(vocab)
        for token in added_tokens:
            if token not in self.vocab:
                self.vocab[token] = next_id
                next_id += 1
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        # Special tokens written literally in a prompt stay whole (case-sensitive), as transformers' added-token
        # trie does; the longest one wins when two start at the same place.
        self.special_tokens = sorted(set(SPECIAL_TOKENS) | set(added_tokens), key=len, reverse=True)
        self.pad_token_id = self.vocab["[PAD]"]
        self.unk_token_id = self.vocab["[UNK]"]
        self.cls_token_id = self.vocab["[CLS]"]
        self.sep_token_id = self.vocab["[SEP]"]
        self.enc_token_id = self.vocab.get("[ENC]")

    @classmethod
    def from_files(cls, vocab_path, tokenizer_config_path=None):
        """Build from `vocab.txt` and optionally `tokenizer_config.json` (do_lower_case, strip_accents,
        tokenize_chinese_chars; bert-base-uncased's defaults when absent)."""
        options = {}
        if tokenizer_config_path is not None:
            config = load_json_object(tokenizer_config_path, "a BERT tokenizer configuration (tokenizer_config.json)",
                                      "Download tokenizer_config.json again from the bert-base-uncased "
                                      "repository on Hugging Face.")
            for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
                if key in config:
                    options[key] = config[key]
        return cls(load_vocab(vocab_path), **options)

    @property
    def vocab_size(self):
        """Number of ids the tokenizer can emit (vocabulary plus added tokens), i.e. len(tokenizer)."""
        return len(self.vocab)

    # --- basic tokenization -------------------------------------------------------------------------
    def _clean_text(self, text):
        output = []
        for char in text:
            code = ord(char)
            if code == 0 or code == 0xFFFD or _is_control(char):
                continue
            output.append(" " if _is_whitespace(char) else char)
        return "".join(output)

    def _space_chinese_chars(self, text):
        output = []
        for char in text:
            if _is_chinese_char(ord(char)):
                output.extend((" ", char, " "))
            else:
                output.append(char)
        return "".join(output)

    @staticmethod
    def _strip_accents(text):
        return "".join(char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn")

    @staticmethod
    def _split_on_punctuation(text):
        pieces, current = [], []
        for char in text:
            if _is_punctuation(char):
                if current:
                    pieces.append("".join(current))
                    current = []
                pieces.append(char)
            else:
                current.append(char)
        if current:
            pieces.append("".join(current))
        return pieces

    def basic_tokenize(self, text):
        """Clean, space CJK characters, NFC, split on whitespace, lower case / strip accents, split punctuation."""
        text = self._clean_text(text)
        if self.tokenize_chinese_chars:
            text = self._space_chinese_chars(text)
        text = unicodedata.normalize("NFC", text)
        tokens = []
        for token in text.split():
            if self.do_lower_case:
                token = token.lower()
                if self.strip_accents is not False:
                    token = self._strip_accents(token)
            elif self.strip_accents:
                token = self._strip_accents(token)
            tokens.extend(self._split_on_punctuation(token))
        return " ".join(tokens).split()

    def wordpiece(self, token):
        """Greedy longest-match-first WordPiece of one basic token; an unsplittable word becomes [UNK]."""
        if len(token) > self.max_input_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(token):
            end = len(token)
            match = None
            while start < end:
                candidate = token[start:end]
                if start > 0:
                    candidate = "##" + candidate
                if candidate in self.vocab:
                    match = candidate
                    break
                end -= 1
            if match is None:
                return ["[UNK]"]
            pieces.append(match)
            start = end
        return pieces

    def _split_special_tokens(self, text):
        """Split `text` around literal special tokens: [(piece, is_special), ...]."""
        parts, start, position = [], 0, 0
        while position < len(text):
            for special in self.special_tokens:
                if text.startswith(special, position):
                    if position > start:
                        parts.append((text[start:position], False))
                    parts.append((special, True))
                    position += len(special)
                    start = position
                    break
            else:
                position += 1
        if start < len(text):
            parts.append((text[start:], False))
        return parts

    def tokenize(self, text):
        """Text -> WordPiece tokens (no [CLS]/[SEP])."""
        tokens = []
        for piece, is_special in self._split_special_tokens(text):
            if is_special:
                tokens.append(piece)
                continue
            for word in self.basic_tokenize(piece):
                tokens.extend(self.wordpiece(word))
        return tokens

    def encode(self, text, max_length=35):
        """Text -> (input_ids, attention_mask), each a list of `max_length` ints.

        As ImageReward calls its tokenizer: `[CLS] tokens [SEP]`, truncated to `max_length` (keeping [SEP]) and
        right-padded with [PAD] (attention mask 0).
        """
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
        ids = [self.vocab.get(token, self.unk_token_id) for token in self.tokenize(text)]
        ids = [self.cls_token_id] + ids[: max_length - 2] + [self.sep_token_id]
        attention_mask = [1] * len(ids) + [0] * (max_length - len(ids))
        ids = ids + [self.pad_token_id] * (max_length - len(ids))
        return ids, attention_mask

