"""Free-text masking (core.access.mask_text): a table of inputs and the text each role without personal data sees."""
import pytest

from core.access import mask_text

CASES = [
    ("电话13812345678请回电", "电话138****5678请回电"),
    ("+86 138-1234-5678", "+86 138-****-5678"),
    ("0086 13812345678", "0086 138****5678"),
    ("座机0755-12345678", "座机0755-****5678"),
    ("身份证11010519900101123X", "身份证110105********123X"),
    ("卡号 6222021234567890128 ", "卡号 6222***********0128 "),
    ("邮箱 z.san@example.com", "邮箱 z***@example.com"),
    # never masked: the system's own codes, dates, times, amounts, case numbers, a card number failing Luhn
    ("网格440311001002003", "网格440311001002003"),
    ("2026-12-02 14:50 罚款1200元", "2026-12-02 14:50 罚款1200元"),
    ("案件 202612020001", "案件 202612020001"),
    ("6222021234567890127", "6222021234567890127"),
]


@pytest.mark.parametrize(("text", "seen"), CASES)
def test_mask_text(text, seen):
    assert mask_text(text) == seen


def test_old_id_masked_unless_own_code():
    assert mask_text("110105900101123", ("440311",)) == "110105******123"
    assert mask_text("440311001002003", ("440311",)) == "440311001002003"
