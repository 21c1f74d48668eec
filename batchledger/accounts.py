"""Accounts: where batches are made. `default` (today's OPENAI_* variables), the built-in
`demo` (an emulator inside the process), and those named in accounts.toml.

The file names environment variables, never keys:

    [accounts.work]
    api_key_env = "OPENAI_WORK_KEY"

    [accounts.azure-east]
    kind = "azure"
    endpoint = "https://my-resource.openai.azure.com"
    api_version = "2025-04-01-preview"
    api_key_env = "AZURE_OPENAI_API_KEY"

    [accounts.claude]                   # Anthropic's Message Batches
    kind = "anthropic"
    api_key_env = "ANTHROPIC_API_KEY"   # the default; base_url optional

    [accounts.groq]
    base_url = "https://api.groq.com/openai/v1"
    api_key_env = "GROQ_API_KEY"
    profile = "groq"                    # an OpenAI-compatible host's limits and windows
    max_requests = 10000                # any account may override its profile's limits
    completion_windows = ["24h", "7d"]

Any account may also hold budgets (issue 22):
    max_cost_per_day = 20                            # USD, held at create
    enqueued_tokens = { "gpt-4o-mini" = 2000000 }    # a job's live input tokens per model
"""

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchledger.errors import UsageError, utf8_text
from batchledger.paths import config_path, user_data_dir
from batchledger.profiles import OPENAI_COMPATIBLE, PROFILES, Profile
from batchledger.redaction import add_secret_variable

ACCOUNT_ENV = "BATCHLEDGER_ACCOUNT"
DEFAULT = "default"
DEMO = "demo"
DEMO_CLAUDE = "demo-claude"
KINDS = ("openai", "azure", "anthropic", "emulator")
# The APIs an emulator account may speak (the bundled emulator's flavors).
FLAVORS = ("openai", "anthropic")
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# The demo's batches move one step every this many seconds: done in about ten.
DEMO_STEP_SECONDS = 3.0

# Budgets any account may hold (issue 22): checked by `_budgets`, not taken for strings.
_BUDGETS = {"max_cost_per_day", "enqueued_tokens"}
# Any account may override these limits of its provider's profile (providers/__init__.py).
OVERRIDES = ("max_requests", "max_bytes", "completion_windows")
_NOT_STRINGS = _BUDGETS | {"step_seconds", *OVERRIDES}
_SETTINGS = {
    "openai": {"kind", "base_url", "api_key_env", "profile", *OVERRIDES} | _BUDGETS,
    "azure": {"kind", "endpoint", "api_version", "api_key_env", *OVERRIDES} | _BUDGETS,
    "anthropic": {"kind", "base_url", "api_key_env", *OVERRIDES} | _BUDGETS,
    "emulator": {"kind", "data_dir", "step_seconds", "flavor", *OVERRIDES} | _BUDGETS,
}
_WINDOW = re.compile(r"[1-9][0-9]*[hd]")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What an API key looks like: OpenAI's sk-…, or any long run of key characters.
_LOOKS_LIKE_A_KEY = re.compile(r"(sk-[A-Za-z0-9_-]{8,}|[A-Za-z0-9_-]{32,})")


@dataclass(frozen=True)
class Account:
    """Where batches are made, and how to reach it."""

    name: str
    kind: str = "openai"
    base_url: str | None = None  # None: the SDK's own (OPENAI_BASE_URL, else OpenAI's)
    api_key_env: str | None = "OPENAI_API_KEY"
    endpoint: str | None = None  # azure: https://RESOURCE.openai.azure.com
    api_version: str | None = None  # azure
    data_dir: Path | None = None  # emulator: where its state is kept
    step_seconds: float = DEMO_STEP_SECONDS  # emulator
    flavor: str = "openai"  # emulator: the API it speaks ("anthropic": Message Batches)
    max_cost_per_day: float | None = None  # USD a UTC day's creates may take the spend to
    # Per model: the counted input tokens a job keeps live at once (the provider's
    # enqueued-token limit, or less). Empty: no token budget.
    enqueued_tokens: Mapping[str, int] = field(default_factory=dict, hash=False)
    profile_name: str | None = None  # None: the kind's own profile
    # The account's own limits over its profile's: (setting, value) pairs of OVERRIDES.
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def location(self) -> str:
        """Where the account's batches live, as the ledger records it for each batch."""
        if self.kind == "emulator":
            return f"emulator:{self.data_dir}"
        if self.kind == "azure":
            return f"{(self.endpoint or '').rstrip('/')}/openai"
        if self.kind == "anthropic":
            return (self.base_url or ANTHROPIC_BASE_URL).rstrip("/")
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")

    @property
    def profile(self) -> Profile:
        """What the account's provider is: its limits (with the account's own overrides),
        windows, metadata, result order, retention, status mapping."""
        profile = PROFILES[self.profile_name or self.provider_kind]
        if self.kind == "openai" and self.profile_name is None:
            # The host may be any OpenAI-compatible API (OPENAI_BASE_URL, base_url): its
            # windows are passed through as given, as before profiles; `profile = "openai"`
            # holds the account to OpenAI's own.
            profile = dataclasses.replace(profile, completion_windows=None)
        return profile.overridden(dict(self.overrides))

    @property
    def provider_kind(self) -> str:
        """The API the account speaks: its kind, or an emulator's flavor of Anthropic's."""
        if self.kind == "emulator" and self.flavor == "anthropic":
            return "anthropic"
        return self.kind

    @property
    def default_endpoint(self) -> str | None:
        return self.profile.default_endpoint

    @property
    def limits(self) -> tuple[int, int]:
        """(requests, bytes) one batch input may hold."""
        return self.profile.limits

    def key(self) -> str | None:
        """The account's API key, from its environment variable; None if not set."""
        if self.api_key_env is None:
            return None
        return os.environ.get(self.api_key_env) or None

    def needs_key(self) -> bool:
        return self.kind != "emulator"


def builtin_accounts() -> dict[str, Account]:
    return {
        DEFAULT: Account(name=DEFAULT),
        DEMO: Account(
            name=DEMO, kind="emulator", api_key_env=None, data_dir=user_data_dir() / "demo"
        ),
        # The same offline try-out, speaking Anthropic's Message Batches.
        DEMO_CLAUDE: Account(
            name=DEMO_CLAUDE,
            kind="emulator",
            flavor="anthropic",
            api_key_env=None,
            data_dir=user_data_dir() / DEMO_CLAUDE,
        ),
    }


class InvalidAccountsFile(UsageError):
    """accounts.toml was read but cannot be used: not UTF-8, not TOML, or not as documented."""


def load_accounts(path: Path | None = None) -> dict[str, Account]:
    """The built-in accounts and those of accounts.toml (a missing file names none)."""
    path = path or config_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return builtin_accounts()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return _parse_accounts(data, path)
    except InvalidAccountsFile:
        raise
    except UsageError as exc:
        raise InvalidAccountsFile(exc.message) from exc


def _parse_accounts(data: bytes, path: Path) -> dict[str, Account]:
    accounts = builtin_accounts()
    try:
        config = tomllib.loads(utf8_text(data, str(path)))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from exc
    _refuse_keys(config, path)
    unknown = sorted(set(config) - {"accounts"})
    if unknown:
        raise UsageError(
            f"{path}: unknown top-level key {unknown[0]!r}; the file holds [accounts.NAME] "
            "tables only"
        )
    section = config.get("accounts", {})
    if not isinstance(section, dict):
        raise UsageError(f"{path}: [accounts] must be a table of accounts")
    for name, settings in section.items():
        if name in accounts:
            raise UsageError(f"{path}: the account name {name!r} is built in; pick another")
        accounts[name] = _account(name, settings, path)
    for account in accounts.values():
        if account.api_key_env:
            add_secret_variable(account.api_key_env)
    return accounts


def choose_account(accounts: Mapping[str, Account], name: str | None) -> Account:
    """The account a run works on: `--account`, else BATCHLEDGER_ACCOUNT, else default."""
    name = name or os.environ.get(ACCOUNT_ENV) or DEFAULT
    if name not in accounts:
        known = ", ".join(sorted(accounts))
        raise UsageError(
            f"no account named {name!r} (accounts: {known}); see 'batchledger accounts'"
        )
    return accounts[name]


def _account(name: str, settings: Any, path: Path) -> Account:
    where = f"{path}: [accounts.{name}]"
    if not isinstance(settings, dict):
        raise UsageError(f"{where} must be a table")
    kind = settings.get("kind", "openai")
    if kind not in KINDS:
        raise UsageError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    unknown = sorted(set(settings) - _SETTINGS[kind])
    if unknown:
        raise UsageError(f"{where}: unknown setting {unknown[0]!r} for kind {kind!r}")
    for setting, value in settings.items():
        if setting not in _NOT_STRINGS and not isinstance(value, str):
            raise UsageError(f"{where}: {setting} must be a string")
    profile = settings.get("profile")
    if profile is not None and profile not in OPENAI_COMPATIBLE:
        raise UsageError(
            f"{where}: unknown profile {profile!r} (profiles: {', '.join(OPENAI_COMPATIBLE)})"
        )
    return replace(
        _connection(name, kind, settings, where),
        profile_name=profile,
        overrides=_overrides(settings, where),
        **_budgets(settings, where),
    )


def _overrides(settings: Mapping[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    """The account's own limits, checked: counts above zero, windows a list of names."""
    found: list[tuple[str, Any]] = []
    for setting in ("max_requests", "max_bytes"):
        value = settings.get(setting)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{where}: {setting} must be a whole number above 0, not {value!r}")
        found.append((setting, value))
    windows = settings.get("completion_windows")
    if windows is not None:
        if (
            not isinstance(windows, list)
            or not windows
            or not all(isinstance(window, str) and _WINDOW.fullmatch(window) for window in windows)
        ):
            raise UsageError(
                f"{where}: completion_windows must be a list of windows such as "
                f'["24h", "7d"], not {windows!r}'
            )
        found.append(("completion_windows", tuple(windows)))
    return tuple(found)


def _budgets(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An account's `max_cost_per_day` and `enqueued_tokens`, checked."""
    budgets: dict[str, Any] = {}
    cost = settings.get("max_cost_per_day")
    if cost is not None:
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost < 0
        ):
            raise UsageError(
                f"{where}: max_cost_per_day must be a number of USD, 0 or more, not {cost!r}"
            )
        budgets["max_cost_per_day"] = float(cost)
    tokens = settings.get("enqueued_tokens")
    if tokens is not None:
        if not isinstance(tokens, dict):
            raise UsageError(
                f'{where}: enqueued_tokens must be a table of models, like {{ "gpt-4o-mini" '
                "= 2000000 }"
            )
        for model, limit in tokens.items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise UsageError(
                    f"{where}: enqueued_tokens of {model!r} must be a whole number of tokens, "
                    f"1 or more, not {limit!r}"
                )
        budgets["enqueued_tokens"] = dict(tokens)
    return budgets


def _connection(name: str, kind: str, settings: Mapping[str, Any], where: str) -> Account:
    """The account as its connection settings describe it."""
    default_key_env = {"azure": "AZURE_OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
    key_env = settings.get("api_key_env", default_key_env.get(kind))
    if kind == "openai" and key_env is None:
        key_env = "OPENAI_API_KEY"
    if key_env is not None and not _VARIABLE_NAME.fullmatch(key_env):
        raise UsageError(f"{where}: api_key_env names an environment variable, not {key_env!r}")
    if kind == "azure":
        for required in ("endpoint", "api_version"):
            if not settings.get(required):
                raise UsageError(f"{where}: kind 'azure' needs {required}")
        _check_url(settings["endpoint"], f"{where}: endpoint")
        return Account(
            name=name,
            kind=kind,
            api_key_env=key_env,
            endpoint=settings["endpoint"],
            api_version=settings["api_version"],
        )
    if kind == "emulator":
        step = settings.get("step_seconds", DEMO_STEP_SECONDS)
        if not isinstance(step, int | float) or isinstance(step, bool) or not 0 < step <= 3600:
            raise UsageError(f"{where}: step_seconds must be a number from 0 to 3600")
        data_dir = Path(settings.get("data_dir") or user_data_dir() / f"emulator-{name}")
        flavor = settings.get("flavor", "openai")
        if flavor not in FLAVORS:
            raise UsageError(f"{where}: unknown flavor {flavor!r} (flavors: {', '.join(FLAVORS)})")
        return Account(
            name=name,
            kind=kind,
            api_key_env=None,
            data_dir=data_dir.expanduser(),
            step_seconds=float(step),
            flavor=flavor,
        )
    base_url = settings.get("base_url")
    if base_url is not None:
        _check_url(base_url, f"{where}: base_url")
    return Account(name=name, kind=kind, base_url=base_url, api_key_env=key_env)


def _check_url(url: str, what: str) -> None:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise UsageError(f"{what} must be an http:// or https:// URL, not {url!r}")


def _refuse_keys(config: Mapping[str, Any], path: Path) -> None:
    """The file names variables that hold keys; a key written in it is refused."""
    for name, value in _strings(config):
        if name.endswith("api_key_env") and _VARIABLE_NAME.fullmatch(value):
            continue
        if name.endswith(("api_key", "key", "token", "secret")) or _LOOKS_LIKE_A_KEY.fullmatch(
            value
        ):
            raise UsageError(
                f"{path} seems to hold an API key ({name}); it must name the environment "
                'variable that holds it instead (api_key_env = "MY_KEY_VARIABLE"), and the '
                "key should be revoked if this file was shared"
            )


def _strings(value: Any, name: str = "") -> list[tuple[str, str]]:
    """Every string in a TOML document, with the dotted name of where it is."""
    if isinstance(value, str):
        return [(name, value)]
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _strings(sub, f"{name}.{key}")]
    if isinstance(value, list):
        return [item for sub in value for item in _strings(sub, name)]
    return []
