"""The password rule: 8 to 128 characters, not a common password, not the e-mail address.

Length alone lets through "12345678" and "password1"; the bundled list
(``core/data/common_passwords.txt``, ~8,000 entries of the 20,000 most used) is what online
guessing tries first, so those are refused outright.
"""
from functools import lru_cache

from core.config import PROJECT_ROOT

MIN_LENGTH, MAX_LENGTH = 8, 128
_LIST_FILE = PROJECT_ROOT / "core" / "data" / "common_passwords.txt"


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list, lower-cased (read once per process)."""
    lines = _LIST_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def password_problems(password: str, email: str | None = None) -> list[str]:
    """Return why ``password`` is refused (Chinese, for the person choosing it); empty when it is fine."""
    if not isinstance(password, str):
        return ["必须是字符串"]
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return [f"密码长度须为 {MIN_LENGTH} 到 {MAX_LENGTH} 位"]
    folded = password.strip().lower()
    if len(set(folded)) == 1 or folded in common_passwords():
        return ["该密码过于常见，容易被猜中，请换一个"]
    if isinstance(email, str) and email.strip():
        address = email.strip().lower()
        if folded in {address, address.split("@", 1)[0]}:
            return ["密码不能与邮箱相同"]
    return []
