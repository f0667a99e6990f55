"""What a variable name means: model weight, optimizer state, EMA shadow, step counter.

Recognising these everywhere keeps them out of restore plans and lets `inspect` label and
hide them (tensorpack's and timm's habit of not counting slots as problems).
"""
import re
from functools import lru_cache

from .errors import PlanError

_OPTIMIZERS = (r"Adam|AdamW|Adamax|Nadam|LazyAdam|Momentum|RMSProp|RMSprop|Adagrad|AdagradDA|"
               r"ProximalAdagrad|ProximalGradientDescent|Ftrl|Adadelta|SGD|Lamb|LARS|Yogi")
# judged on the last name component (cached: a 100,000-variable checkpoint has few of them)
_SLOT = re.compile(rf"({_OPTIMIZERS})(_\d+)?")         # var/Adam, var/Adam_1, var/t_0/Adagrad
_EMA = re.compile(r"ExponentialMovingAverage(_\d+)?")
_POWER = re.compile(r"beta[12]_power(_\d+)?")           # Adam's, anywhere
_STEPS = {"global_step", "iterations", "iterations:0"}
# judged on the whole name
_OPTIMIZER_PREFIX = re.compile(
    rf"training(_\d+)?/({_OPTIMIZERS})/"                 # Keras-in-estimator slots
    r"|optimizer(_weights)?/"                            # TF2 object / Keras h5 / Keras 3
    r"|[mv](hat)?_\d+(:0)?$")                            # Keras 2.3 m_i/v_i/vhat_i
_TF2_STEPS = {"save_counter/.ATTRIBUTES/VARIABLE_VALUE", "step/.ATTRIBUTES/VARIABLE_VALUE"}
_META = {"_CHECKPOINTABLE_OBJECT_GRAPH"}

ROLES = ("model", "optimizer", "ema", "step", "meta")


def role(name):
    """One of ROLES for a checkpoint key."""
    if name in _META:
        return "meta"
    scope, _, last = name.rpartition("/")
    found = _last_role(last, bool(scope))
    if found:
        return found
    if name in _TF2_STEPS:
        return "step"
    if ".OPTIMIZER_SLOT/" in name or _OPTIMIZER_PREFIX.match(name):
        return "optimizer"
    return "model"


@lru_cache(maxsize=1 << 16)
def _last_role(last, scoped):
    if scoped and _EMA.fullmatch(last):
        return "ema"
    if last in _STEPS:
        return "step"
    if scoped and _SLOT.fullmatch(last) or _POWER.fullmatch(last):
        return "optimizer"
    return None


# --- scope patterns (DESIGN.md "Scope semantics") -------------------------------------------
#
# component (default)  the pattern equals a run of whole path components, anywhere in the name:
#                      `Logits` matches `InceptionV3/Logits/Conv2d_1c_1x1/weights`, never
#                      `AuxLogits/...` or `Logits_2/...`; a leading "/" anchors it at the start,
#                      a trailing "/" is ignored.
# prefix               tf-slim's raw `name.startswith(text)`, for bit-exact ports of its flags.
# re:REGEX             `re.search`, whatever the mode.
# ("suffix" pairs names in restore plans; its scope patterns match as components.)

MATCH_MODES = ("component", "prefix", "suffix")


class Pattern:
    """A compiled scope pattern: `text` as given, `kind` ("component", "prefix" or "re")."""

    __slots__ = ("text", "kind", "matches")

    def __init__(self, text, kind, matches):
        self.text = text
        self.kind = kind
        self.matches = matches          # matches(name) -> bool

    def __repr__(self):
        return f"Pattern({self.text!r}, {self.kind})"


def compile_pattern(text, match="component"):
    """`text` as a Pattern under `match` (component, prefix; suffix reads as component)."""
    if match not in MATCH_MODES:
        raise PlanError(f"unknown match mode {match!r}; use one of {', '.join(MATCH_MODES)}")
    if not isinstance(text, str) or not text:
        raise PlanError(f"empty scope pattern {text!r}")
    if text.startswith("re:"):
        try:
            rx = re.compile(text[3:])
        except re.error as e:
            raise PlanError(f"invalid regular expression {text!r}: {e}") from None
        return Pattern(text, "re", lambda name: rx.search(name) is not None)
    if match == "prefix":
        return Pattern(text, "prefix", lambda name: name.startswith(text))
    core = text.strip("/")
    if not core:
        raise PlanError(f"scope pattern {text!r} names no scope")
    if text.startswith("/"):
        head = core + "/"
        return Pattern(text, "component", lambda name: (name + "/").startswith(head))
    needle = "/" + core + "/"
    return Pattern(text, "component", lambda name: needle in "/" + name + "/")


def scope_paths(names):
    """Every scope of every name ("a", "a/b", ...) and the names themselves."""
    scopes = set()
    for name in names:
        i = name.find("/")
        while i != -1:
            scopes.add(name[:i])
            i = name.find("/", i + 1)
        scopes.add(name)
    return scopes


def closest_scopes(text, names, n=3, cutoff=0.6):
    """The scope paths of `names` closest to pattern `text`, best first.

    A scope qualifies by its whole path or by its last components alone, as many as `text`
    has (a component pattern matches anywhere, so that is what a user types): `logits` finds
    `resnet_v1_50/logits` and `Logitz` finds `InceptionV3/Logits`. Comparisons are difflib's,
    case-insensitive; ties go to the shorter scope; a scope is left out when an ancestor is
    already suggested.
    """
    from difflib import SequenceMatcher

    core = (text[3:] if text.startswith("re:") else text).strip("/").lower()
    if not core:
        return []
    depth = core.count("/") + 1
    scores = {}
    by_tail = {}
    whole = SequenceMatcher()
    whole.set_seq2(core)
    for scope in scope_paths(names):
        low = scope.lower()
        by_tail.setdefault("/".join(low.split("/")[-depth:]), []).append(scope)
        whole.set_seq1(low)
        if whole.real_quick_ratio() >= cutoff and whole.quick_ratio() >= cutoff:
            score = whole.ratio()
            if score >= cutoff:
                scores[scope] = score
    tail = SequenceMatcher()
    tail.set_seq2(core)
    for end, scopes in by_tail.items():
        if end == core:
            score = 1.0
        else:
            tail.set_seq1(end)
            if tail.real_quick_ratio() < cutoff or tail.quick_ratio() < cutoff:
                continue
            score = tail.ratio()
            if score < cutoff:
                continue
        for scope in scopes:
            if score > scores.get(scope, 0.0):
                scores[scope] = score
    chosen = []
    for scope in sorted(scores, key=lambda s: (-scores[s], len(s), s)):
        # a better-placed ancestor already points there: `resnet_v1_50`, not also its children
        if not any(scope.startswith(c + "/") for c in chosen):
            chosen.append(scope)
            if len(chosen) == n:
                break
    return chosen


# --- rename rules (plan --map, surgery --rename) -------------------------------------------

class RenameRule:
    """One rename rule, OLD=NEW: OLD a literal scope (whole leading components; empty OLD
    prepends NEW) or `re:REGEX` (re.sub with NEW); `apply(name)` -> new name. Used by plan's
    --map and surgery's --rename/--strip-prefix/--add-prefix."""

    def __init__(self, text):
        self.text = text
        if isinstance(text, (tuple, list)) and len(text) == 2:
            old, new = text
            self.text = f"{old}={new}"
        elif not isinstance(text, str) or "=" not in text:
            raise PlanError(f"rename rule {text!r} is not OLD=NEW (e.g. 'old_scope/=new_scope/'"
                            f" or 're:^tower_0/=')")
        elif text.startswith("re:"):
            old, _, new = text.rpartition("=")
        else:
            old, _, new = text.partition("=")
        if old.startswith("re:"):
            try:
                rx = re.compile(old[3:])
                rx.sub(new, "")            # parses the replacement: bad group references
            except (re.error, IndexError) as e:
                raise PlanError(f"invalid rename rule {self.text!r}: {e}") from None
            self.old = old
            self.apply = lambda name: rx.sub(new, name)
            return
        old_scope, new_scope = old.strip("/"), new.strip("/")
        self.old = old_scope
        if not old_scope:
            if not new_scope:
                raise PlanError(f"rename rule {self.text!r} renames nothing")
            self.apply = lambda name: f"{new_scope}/{name}"
            return
        head, cut = old_scope + "/", len(old_scope) + 1
        lead = new_scope + "/" if new_scope else ""

        def apply(name):
            if name.startswith(head):
                return lead + name[cut:]
            if name == old_scope and new_scope:
                return new_scope
            return name

        self.apply = apply
