"""Static checks of generated Vitis HLS C++ (the rules of ``hls-hardware-rules.md`` that a parser can prove).

The kernel translation unit is parsed with libclang (PyPI ``libclang``) as the C-simulation front end
sees it: ``-std=c++14 -fsyntax-only``, the kernel's include directories, hls4ml's arbitrary-precision
headers (``ap_int.h``, ``hls_stream.h``) and, because the bundled libclang ships no resource directory,
g++'s system include paths. ``__SYNTHESIS__`` is NOT defined (it would pull ``hls_math.h``, which
hls4ml does not ship). HLS pragmas are not in the AST: each rule reads them from the source text
inside the extent of the function or loop it checks.

Which code is checked. *Project files* are files under the project root (the kernel's directory for
``check_kernel``, the project directory for ``check_project``); system and ``ap_types`` headers are
never checked. *Concrete functions* are the non-template function definitions in project files plus
every template instantiation reached from them through calls (libclang exposes an instantiation's body
with its template arguments substituted, so array sizes and constants are exact there). A template
that is never instantiated is skipped by the rules that need sizes or constants.

Rules (one function each, ``check_<rule>(unit)``, returning ``Violation``s named by the rule):

``syntax``          clang errors (and the warnings in ``RELEVANT_WARNINGS``, in project files) with
                    ``-std=c++14``. ``-Wunknown-pragmas`` is off (every ``#pragma HLS`` would be one).
``pointer-params``  no parameter of type ``T**``, ``T* const*``, array of pointers ``T* p[N]`` or
                    reference to such an array, in any function defined in project files (templates
                    included, as written), the top function included (its plain ``T*`` m_axi ports are
                    fine). Vitis HLS does not support pointer-to-pointer arguments.
``bind-storage``    every local or function-static array variable of a concrete function larger than
                    ``BIND_STORAGE_MIN_BYTES`` (16 KB) has ``#pragma HLS BIND_STORAGE variable=<name>``
                    in the same function body, or is a stream (``hls::stream`` elements or a
                    ``#pragma HLS STREAM variable=<name>``). Cannot see: namespace-scope arrays (no
                    function to hold the pragma), arrays inside structs/classes, sizes of templates that
                    are never instantiated, whether the chosen storage is the right one.
``single-engine``   over the call graph reachable from the top function, each function named in
                    ``engine_functions`` (unqualified name) has exactly one template instantiation and
                    exactly one call site. Zero is a violation too (the kernel must contain the engine).
                    Cannot see: calls through function pointers, ``ALLOCATION`` pragmas that would make
                    several call sites share one instance (they are not accepted as an alternative).
``partition-factor`` for each ``ARRAY_PARTITION variable=X cyclic|block factor=F dim=D`` in a concrete
                    function, and each loop of that function with its own ``#pragma HLS UNROLL`` and unit
                    step (``++i``, ``i++``, ``i += 1``; unroll count U = the factor, or the constant trip
                    count of a full unroll) whose variable ``i`` indexes X in dimension D with unit stride
                    (the index is ``i``, ``e + i`` or ``i + e`` with ``e`` free of ``i``, directly or
                    through one const local initialised so): one unrolled iteration accesses U
                    consecutive elements. Cyclic: ceil(U / F) of them hit the same bank whatever the
                    alignment, so a violation is reported when U > 2 * F (more than the two ports of a
                    dual-port bank). Block (only when the index is exactly ``i`` or ``i + literal`` and
                    the loop starts at a constant, so the indices of the first unrolled iteration are
                    known): banks are blocks of ceil(N / F) consecutive elements; a violation when more
                    than 2 of those indices fall in one block. ``dim=0`` checks every dimension. F, U, D
                    and N must resolve to integer constants (literal, const variable in the function,
                    template argument of the instantiation, namespace-scope constant, object-like
                    macro); anything unresolved, any other index form is skipped: the rule reports only
                    what it proves. Cannot see: accesses from several loops or call sites in the same
                    cycle, reads and writes competing for the ports, partitions of a parameter declared
                    in a caller, ``complete`` partitions (always sufficient) or arrays with no partition.
``m-axi-ports``     every ``#pragma HLS INTERFACE m_axi port=P`` of the top function has ``depth=``, and
                    for a port that is read ``max_read_burst_length`` and ``num_read_outstanding``, for a
                    port that is written ``max_write_burst_length`` and ``num_write_outstanding``
                    (direction: from ``port_directions`` when given -- ``check_project`` takes it from
                    the project spec -- else ``in`` for a pointer to const, ``inout`` otherwise); every
                    pointer parameter of the top has such a pragma; ports whose name matches
                    ``wide_ports`` (weights, KV cache) have a pointee of at least 256 bits (width =
                    ``sizeof`` of the pointee: ``ap_uint<512>`` is 512, ``float`` 32).
``loop-tripcount``  every ``for``/``while``/``do`` loop of a concrete function whose bound is not a
                    compile-time constant and that is not fully unrolled has its own (not a nested
                    loop's) ``#pragma HLS LOOP_TRIPCOUNT``. A ``for`` bound is constant when the
                    condition is a comparison whose operand other than the loop variable evaluates to an
                    integer constant (``clang_Cursor_Evaluate``); ``while``/``do`` loops and anything
                    else count as variable. ``constexpr`` functions are skipped (compile-time helpers:
                    the front end evaluates them where they are used in constant expressions).
                    Cannot see: a loop bounded by a variable that is constant in practice.
"""

from __future__ import annotations

import ctypes
import functools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import clang.cindex as ci
from clang.cindex import CursorKind as CK
from clang.cindex import TypeKind as TK

BIND_STORAGE_MIN_BYTES = 16 * 1024
WIDE_PORT_MIN_BITS = 256
DEFAULT_WIDE_PORTS = r"^(w\d+|kvw?\d+)$"
DEFAULT_ENGINE_FUNCTIONS = ("linear_mac", "attention")   # the MAC array of THE linear engine; THE attention unit

# Warnings that matter for HLS (variable-length arrays do not synthesise; a missing return or an
# uninitialised read gives C simulation and RTL different behaviour). Enabled explicitly.
RELEVANT_WARNINGS = ("-Wvla", "-Wvla-extension", "-Wvla-cxx-extension", "-Wreturn-type", "-Wuninitialized",
                     "-Wsometimes-uninitialized")

RULES = ("syntax", "pointer-params", "bind-storage", "single-engine", "partition-factor", "m-axi-ports",
         "loop-tripcount")

_FUNCTION_KINDS = (CK.FUNCTION_DECL, CK.CXX_METHOD, CK.CONSTRUCTOR, CK.DESTRUCTOR, CK.CONVERSION_FUNCTION)
_TEMPLATE_KINDS = (CK.FUNCTION_TEMPLATE,)
_CLASS_TEMPLATE_KINDS = (CK.CLASS_TEMPLATE, CK.CLASS_TEMPLATE_PARTIAL_SPECIALIZATION)
_SCOPE_KINDS = (CK.NAMESPACE, CK.CLASS_DECL, CK.STRUCT_DECL, CK.UNEXPOSED_DECL, CK.LINKAGE_SPEC,
                *_CLASS_TEMPLATE_KINDS)
_LOOP_KINDS = (CK.FOR_STMT, CK.WHILE_STMT, CK.DO_STMT)


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` (one of ``RULES``), file (relative to the project root) and line."""

    rule: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.file}:{self.line}: {self.message}"


# ---------------------------------------------------------------------------------------------------
# pragmas

_PRAGMA_RE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+HLS[ \t]+((?:[^\n]*\\\n)*[^\n]*)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Pragma:
    """One ``#pragma HLS DIRECTIVE key=value flag ...``: directive upper case, keys and flags lower case,
    values as written."""

    offset: int
    line: int
    directive: str
    options: Mapping[str, str]
    flags: frozenset

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self.options.get(key, default)


def parse_pragma(body: str, offset: int = 0, line: int = 0) -> Pragma:
    """``body`` is the text after ``#pragma HLS``; spaces around ``=`` are allowed."""
    text = re.sub(r"\s*=\s*", "=", body.replace("\\\n", " ")).split("//")[0]
    words = text.split()
    options, flags = {}, set()
    for word in words[1:]:
        if "=" in word:
            key, value = word.split("=", 1)
            options[key.lower()] = value
        else:
            flags.add(word.lower())
    return Pragma(offset, line, words[0].upper() if words else "", options, frozenset(flags))


# ---------------------------------------------------------------------------------------------------
# libclang helpers

def _clang_lib():
    lib = ci.conf.lib
    if not getattr(lib, "_flexllm_eval_ready", False):
        lib.clang_Cursor_Evaluate.argtypes = [ci.Cursor]
        lib.clang_Cursor_Evaluate.restype = ctypes.c_void_p
        lib.clang_EvalResult_getKind.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getKind.restype = ctypes.c_int
        lib.clang_EvalResult_getAsLongLong.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getAsLongLong.restype = ctypes.c_longlong
        lib.clang_EvalResult_dispose.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_dispose.restype = None
        lib._flexllm_eval_ready = True
    return lib


def evaluate_int(cursor: Optional[ci.Cursor]) -> Optional[int]:
    """The integer value of a constant expression (or of a variable's initialiser), else None."""
    if cursor is None:
        return None
    lib = _clang_lib()
    result = lib.clang_Cursor_Evaluate(cursor)
    if not result:
        return None
    try:
        return int(lib.clang_EvalResult_getAsLongLong(result)) if lib.clang_EvalResult_getKind(result) == 1 else None
    finally:
        lib.clang_EvalResult_dispose(result)


def _specialized_template(cursor: ci.Cursor) -> Optional[ci.Cursor]:
    tmpl = ci.conf.lib.clang_getSpecializedCursorTemplate(cursor)
    return None if tmpl is None or tmpl.kind.is_invalid() else tmpl


def template_int_arguments(cursor: ci.Cursor) -> Dict[str, int]:
    """Names -> values of the integral template arguments of a function template instantiation."""
    tmpl = _specialized_template(cursor)
    if tmpl is None:
        return {}
    params = [c for c in tmpl.get_children()
              if c.kind in (CK.TEMPLATE_TYPE_PARAMETER, CK.TEMPLATE_NON_TYPE_PARAMETER, CK.TEMPLATE_TEMPLATE_PARAMETER)]
    values = {}
    for i, param in enumerate(params[: max(cursor.get_num_template_arguments(), 0)]):
        if param.kind == CK.TEMPLATE_NON_TYPE_PARAMETER and \
                cursor.get_template_argument_kind(i) == ci.TemplateArgumentKind.INTEGRAL:
            values[param.spelling] = cursor.get_template_argument_value(i)
    return values


def is_constexpr(fn: ci.Cursor) -> bool:
    """Whether a function is declared ``constexpr`` (a token before its name)."""
    for t in fn.get_tokens():
        if t.spelling == fn.spelling.split("<")[0] or t.spelling in ("(", "{"):
            return False
        if t.spelling == "constexpr":
            return True
    return False


def instantiation_name(fn: ci.Cursor) -> str:
    """``name<arg, ...>`` for a template instantiation (types and integral arguments), else the name."""
    n = fn.get_num_template_arguments()
    if n <= 0:
        return fn.spelling
    args = []
    for i in range(n):
        kind = fn.get_template_argument_kind(i)
        if kind == ci.TemplateArgumentKind.INTEGRAL:
            args.append(str(fn.get_template_argument_value(i)))
        elif kind == ci.TemplateArgumentKind.TYPE:
            args.append(fn.get_template_argument_type(i).spelling)
        else:
            args.append("?")
    return f"{unqualified_name(fn)}<{', '.join(args)}>"


def unqualified_name(cursor: ci.Cursor) -> str:
    return cursor.spelling.split("<")[0]


def _strip(cursor: ci.Cursor) -> ci.Cursor:
    """Skip implicit casts / parentheses (UNEXPOSED_EXPR, PAREN_EXPR) with one child."""
    while cursor.kind in (CK.UNEXPOSED_EXPR, CK.PAREN_EXPR):
        kids = list(cursor.get_children())
        if len(kids) != 1:
            break
        cursor = kids[0]
    return cursor


def _refers_to(cursor: ci.Cursor, decl: ci.Cursor) -> bool:
    return any(c.kind == CK.DECL_REF_EXPR and c.referenced is not None and c.referenced == decl
               for c in cursor.walk_preorder())


def _token_spellings(cursor: ci.Cursor) -> List[str]:
    return [t.spelling for t in cursor.get_tokens()]


@functools.lru_cache(maxsize=1)
def gcc_system_includes() -> Tuple[str, ...]:
    """g++'s ``#include <...>`` search path: the bundled libclang has no resource directory of its own
    (``stddef.h``) and no C++ standard library."""
    try:
        out = subprocess.run(["g++", "-E", "-x", "c++", "-", "-v"], input="", capture_output=True, text=True,
                             timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"#include <\.\.\.> search starts here:\n(.*?)End of search list", out, re.S)
    return tuple(line.strip() for line in match.group(1).splitlines() if line.strip()) if match else ()


def ap_types_dir() -> Path:
    import hls4ml
    return Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"


def clang_args(include_dirs: Sequence[Path]) -> List[str]:
    args = ["-x", "c++", "-std=c++14", "-fsyntax-only", "-Wno-unknown-pragmas", *RELEVANT_WARNINGS]
    args += [f"-I{d}" for d in include_dirs]
    args += ["-isystem", str(ap_types_dir())]
    for d in gcc_system_includes():
        args += ["-isystem", d]
    return args


# ---------------------------------------------------------------------------------------------------
# the parsed kernel

@dataclass
class Loop:
    """A loop and its parts (``init``/``cond``/``inc`` only for ``for``; None when absent)."""

    cursor: ci.Cursor
    body: Optional[ci.Cursor]
    init: Optional[ci.Cursor] = None
    cond: Optional[ci.Cursor] = None
    inc: Optional[ci.Cursor] = None


class KernelUnit:
    """One parsed kernel translation unit plus the indexes the rules share."""

    def __init__(self, source: Path, top_function: str, include_dirs: Sequence[Path], project_root: Path):
        self.source = Path(source).resolve()
        self.root = Path(project_root).resolve()
        self.top_name = top_function
        self.tu = ci.Index.create().parse(
            str(self.source), args=clang_args(include_dirs),
            options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD)
        self._texts: Dict[str, str] = {}
        self._pragmas: Dict[str, List[Pragma]] = {}
        self._in_project: Dict[str, bool] = {}
        self.definitions: List[ci.Cursor] = []      # non-template function definitions, project files
        self.templates: List[ci.Cursor] = []        # function template definitions, project files
        self.globals: Dict[str, List[ci.Cursor]] = {}  # namespace-scope variables by name
        self.macros: Dict[str, ci.Cursor] = {}
        self._index(self.tu.cursor)
        self.top = next((f for f in self.definitions if f.kind == CK.FUNCTION_DECL and f.spelling == top_function
                         and f.semantic_parent.kind == CK.TRANSLATION_UNIT), None)
        self.functions = self._concrete_functions()

    # -- files, text, pragmas --------------------------------------------------------------------
    def in_project(self, cursor: ci.Cursor) -> bool:
        f = cursor.location.file
        return f is not None and self.in_project_file(f.name)

    def in_project_file(self, name: str) -> bool:
        if name not in self._in_project:
            path = Path(name).resolve()
            self._in_project[name] = path == self.root or self.root in path.parents
        return self._in_project[name]

    def relpath(self, name: str) -> str:
        path = Path(name).resolve()
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def text(self, name: str) -> str:
        """A file's text, decoded one char per byte so that libclang's byte offsets index it."""
        if name not in self._texts:
            self._texts[name] = Path(name).read_bytes().decode("latin-1")
        return self._texts[name]

    def source_text(self, cursor: ci.Cursor) -> str:
        start, end = cursor.extent.start, cursor.extent.end
        return self.text(start.file.name)[start.offset:end.offset] if start.file is not None else ""

    def pragmas(self, name: str) -> List[Pragma]:
        if name not in self._pragmas:
            text = self.text(name)
            self._pragmas[name] = [parse_pragma(m.group(1), m.start(), text.count("\n", 0, m.start()) + 1)
                                   for m in _PRAGMA_RE.finditer(text)]
        return self._pragmas[name]

    def pragmas_in(self, cursor: Optional[ci.Cursor], directive: Optional[str] = None) -> List[Pragma]:
        """Pragmas whose text lies inside the cursor's extent."""
        if cursor is None or cursor.extent.start.file is None:
            return []
        start, end = cursor.extent.start.offset, cursor.extent.end.offset
        return [p for p in self.pragmas(cursor.extent.start.file.name)
                if start <= p.offset < end and (directive is None or p.directive == directive)]

    def violation(self, rule: str, cursor: ci.Cursor, message: str) -> Violation:
        loc = cursor.location
        return Violation(rule, self.relpath(loc.file.name) if loc.file else "?", loc.line, message)

    # -- indexes ---------------------------------------------------------------------------------
    def _index(self, scope: ci.Cursor, templated: bool = False) -> None:
        """Collect definitions in project files; members of class templates count as templates."""
        for c in scope.get_children():
            if c.kind == CK.MACRO_DEFINITION:
                if self.in_project(c):
                    self.macros[c.spelling] = c
                continue
            if not self.in_project(c):
                continue
            if c.kind in _SCOPE_KINDS:
                self._index(c, templated or c.kind in _CLASS_TEMPLATE_KINDS)
            elif c.kind in _FUNCTION_KINDS and c.is_definition():
                (self.templates if templated else self.definitions).append(c)
            elif c.kind in _TEMPLATE_KINDS and c.is_definition():
                self.templates.append(c)
            elif c.kind == CK.VAR_DECL and not templated:
                self.globals.setdefault(c.spelling, []).append(c)

    @staticmethod
    def key(fn: ci.Cursor) -> Tuple:
        """Identity of a function or one instantiation of a template."""
        loc = fn.location
        return (fn.mangled_name or fn.get_usr(), fn.displayname, loc.file.name if loc.file else "", loc.offset)

    def callee(self, call: ci.Cursor) -> Optional[ci.Cursor]:
        """The definition (or instantiation) a call refers to, if it is in a project file and has a body."""
        ref = call.referenced
        if ref is None or ref.kind not in _FUNCTION_KINDS:
            return None
        if not ref.is_definition():
            ref = ref.get_definition()
            if ref is None or ref.kind not in _FUNCTION_KINDS:
                return None
        if ref.spelling.startswith("operator") and "operator" not in {t.spelling for t in ref.get_tokens()}:
            return None      # a compiler-generated member (implicit copy assignment of a struct with arrays)
        return ref if self.in_project(ref) else None

    def calls(self, fn: ci.Cursor) -> Iterator[Tuple[ci.Cursor, ci.Cursor]]:
        """(call expression, callee definition) for every call in the function's body to a project function."""
        for c in fn.walk_preorder():
            if c.kind == CK.CALL_EXPR:
                callee = self.callee(c)
                if callee is not None:
                    yield c, callee

    def reachable(self, roots: Iterable[ci.Cursor]) -> List[ci.Cursor]:
        seen: Dict[Tuple, ci.Cursor] = {}
        stack = list(roots)
        while stack:
            fn = stack.pop()
            k = self.key(fn)
            if k in seen:
                continue
            seen[k] = fn
            stack.extend(callee for _, callee in self.calls(fn))
        return list(seen.values())

    def _concrete_functions(self) -> List[ci.Cursor]:
        return self.reachable(self.definitions)

    # -- values ----------------------------------------------------------------------------------
    def resolve_int(self, word: Optional[str], fn: Optional[ci.Cursor] = None) -> Optional[int]:
        """An integer pragma argument: literal, constant local of ``fn``, template argument of ``fn``'s
        instantiation, namespace-scope constant or object-like macro; None when it cannot be proven."""
        if word is None:
            return None
        if re.fullmatch(r"[0-9]+[uUlL]*", word):
            return int(re.sub(r"[uUlL]", "", word))
        if not re.fullmatch(r"[A-Za-z_]\w*", word):
            return None
        if fn is not None:
            for c in fn.walk_preorder():
                if c.kind == CK.VAR_DECL and c.spelling == word and c.type.is_const_qualified():
                    return evaluate_int(c)
            args = template_int_arguments(fn)
            if word in args:
                return args[word]
        consts = [c for c in self.globals.get(word, []) if c.type.is_const_qualified()]
        values = {evaluate_int(c) for c in consts}
        if len(values) == 1 and None not in values:
            return values.pop()
        macro = self.macros.get(word)
        if macro is not None:
            body = _token_spellings(macro)[1:]
            if len(body) == 1:
                return self.resolve_int(body[0])
        return None

    # -- loops -----------------------------------------------------------------------------------
    def loop(self, cursor: ci.Cursor) -> Loop:
        kids = list(cursor.get_children())
        if cursor.kind == CK.WHILE_STMT:
            return Loop(cursor, kids[-1] if kids else None, cond=kids[0] if len(kids) > 1 else None)
        if cursor.kind == CK.DO_STMT:
            return Loop(cursor, kids[0] if kids else None, cond=kids[-1] if len(kids) > 1 else None)
        # for: place the children between the header's ';' ';' ')' by offset
        tokens = list(cursor.get_tokens())
        depth, semis, close = 0, [], None
        for t in tokens:
            if t.spelling == "(":
                depth += 1
            elif t.spelling == ")":
                depth -= 1
                if depth == 0:
                    close = t.extent.start.offset
                    break
            elif t.spelling == ";" and depth == 1:
                semis.append(t.extent.start.offset)
        if close is None or len(semis) != 2:
            return Loop(cursor, kids[-1] if kids else None)
        parts = Loop(cursor, None)
        for k in kids:
            off = k.extent.start.offset
            if off < semis[0]:
                parts.init = k
            elif off < semis[1]:
                parts.cond = k
            elif off < close:
                parts.inc = k
            else:
                parts.body = k
        return parts

    def loops(self, fn: ci.Cursor) -> List[Loop]:
        return [self.loop(c) for c in fn.walk_preorder() if c.kind in _LOOP_KINDS]

    def own_pragmas(self, loop: Loop, directive: str) -> List[Pragma]:
        """Pragmas of this loop: inside its body, not inside a nested loop's body."""
        if loop.body is None:
            return []
        nested = [self.loop(c).body for c in loop.body.walk_preorder() if c.kind in _LOOP_KINDS]
        inner = [(b.extent.start.offset, b.extent.end.offset) for b in nested if b is not None]
        return [p for p in self.pragmas_in(loop.body, directive)
                if not any(s <= p.offset < e for s, e in inner)]

    @staticmethod
    def loop_variable(loop: Loop) -> Optional[ci.Cursor]:
        if loop.init is None:
            return None
        decls = [c for c in loop.init.walk_preorder() if c.kind == CK.VAR_DECL]
        return decls[0] if len(decls) == 1 else None

    def constant_trip_count(self, loop: Loop) -> Optional[int]:
        """Trip count of ``for (int i = A; i < B | i <= B; ++i | i++ | i += 1)`` with constant A, B."""
        var = self.loop_variable(loop)
        if var is None or loop.cond is None or loop.inc is None:
            return None
        start = evaluate_int(var)
        bound = self._constant_bound(loop, var)
        if start is None or bound is None:
            return None
        op, value = bound
        if not self.unit_step(loop, var):
            return None
        if op == "<":
            return max(value - start, 0)
        if op == "<=":
            return max(value - start + 1, 0)
        return None

    @staticmethod
    def unit_step(loop: Loop, var: ci.Cursor) -> bool:
        """Whether the increment is ``++var``, ``var++`` or ``var += 1``."""
        return loop.inc is not None and _token_spellings(loop.inc) in (
            ["++", var.spelling], [var.spelling, "++"], [var.spelling, "+=", "1"])

    def _constant_bound(self, loop: Loop, var: ci.Cursor) -> Optional[Tuple[str, int]]:
        """(operator, constant) of a condition ``var OP constant`` / ``constant OP var``, else None."""
        cond = _strip(loop.cond) if loop.cond is not None else None
        if cond is None or cond.kind != CK.BINARY_OPERATOR:
            return None
        operands = list(cond.get_children())
        if len(operands) != 2:
            return None
        lhs, rhs = operands
        op = self._binary_operator(cond, lhs)
        mirror = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "!=": "!="}
        if op not in mirror:
            return None
        if _refers_to(lhs, var) and not _refers_to(rhs, var):
            value = evaluate_int(rhs)
            return None if value is None else (op, value)
        if _refers_to(rhs, var) and not _refers_to(lhs, var):
            value = evaluate_int(lhs)
            return None if value is None else (mirror[op], value)
        return None

    @staticmethod
    def _binary_operator(cond: ci.Cursor, lhs: ci.Cursor) -> Optional[str]:
        end = lhs.extent.end.offset
        for t in cond.get_tokens():
            if t.extent.start.offset >= end:
                return t.spelling
        return None

    def has_constant_bound(self, loop: Loop) -> bool:
        var = self.loop_variable(loop)
        if loop.cursor.kind != CK.FOR_STMT or var is None or loop.cond is None:
            return False
        return self._constant_bound(loop, var) is not None


# ---------------------------------------------------------------------------------------------------
# rules

def check_syntax(unit: KernelUnit) -> List[Violation]:
    """Clang errors anywhere; the ``RELEVANT_WARNINGS`` in project files; a missing top function."""
    def reported(d: ci.Diagnostic) -> bool:
        if d.severity >= ci.Diagnostic.Error:
            return True
        return d.severity == ci.Diagnostic.Warning and d.option in RELEVANT_WARNINGS \
            and d.location.file is not None and unit.in_project_file(d.location.file.name)

    out = []
    for d in filter(reported, unit.tu.diagnostics):
        loc = d.location
        level = "error" if d.severity >= ci.Diagnostic.Error else "warning"
        out.append(Violation("syntax", unit.relpath(loc.file.name) if loc.file else "?", loc.line,
                             f"{level}: {d.spelling}"))
    if unit.top is None:
        out.append(Violation("syntax", unit.relpath(str(unit.source)), 0,
                             f"top function {unit.top_name!r} is not defined in {unit.source.name}"))
    return out


def _pointer_kind(t: ci.Type) -> Optional[str]:
    """'a pointer to pointer' / 'an array of pointers' when the type is one (through references), else None."""
    t = t.get_canonical()
    if t.kind in (TK.LVALUEREFERENCE, TK.RVALUEREFERENCE):
        t = t.get_pointee().get_canonical()
    if t.kind == TK.POINTER and t.get_pointee().get_canonical().kind == TK.POINTER:
        return "a pointer to pointer"
    if t.kind in (TK.CONSTANTARRAY, TK.INCOMPLETEARRAY, TK.VARIABLEARRAY, TK.DEPENDENTSIZEDARRAY) and \
            t.get_array_element_type().get_canonical().kind == TK.POINTER:
        return "an array of pointers"
    return None


def check_pointer_params(unit: KernelUnit) -> List[Violation]:
    """No pointer-to-pointer / array-of-pointers parameter in any function defined in project files.

    Array parameters decay, so ``T* p[N]`` is seen as ``T**``: both are reported, named by the written
    type. Templates are checked as written (a dependent ``T*`` with ``T`` a pointer is not seen)."""
    out, seen = [], set()
    for fn in [*unit.definitions, *unit.templates, *unit.functions]:
        for param in fn.get_children():
            if param.kind != CK.PARM_DECL:
                continue
            what = _pointer_kind(param.type)
            where = (param.location.file.name if param.location.file else "", param.location.offset)
            if what is None or where in seen:
                continue
            seen.add(where)
            written = " ".join(unit.source_text(param).split()) or param.type.spelling
            out.append(unit.violation("pointer-params", param,
                                      f"parameter {param.spelling!r} of {fn.spelling}() is {what} "
                                      f"({written}); Vitis HLS supports no pointer-to-pointer arguments: "
                                      f"pass each m_axi port as its own argument"))
    return out


def _array_dims(t: ci.Type) -> List[int]:
    dims = []
    t = t.get_canonical()
    while t.kind == TK.CONSTANTARRAY:
        dims.append(t.get_array_size())
        t = t.get_array_element_type().get_canonical()
    return dims


def _array_element(t: ci.Type) -> ci.Type:
    t = t.get_canonical()
    while t.kind == TK.CONSTANTARRAY:
        t = t.get_array_element_type().get_canonical()
    return t


def _is_stream(t: ci.Type) -> bool:
    return re.match(r"^(::)?hls::stream<", _array_element(t).spelling) is not None


def _named(pragmas: Iterable[Pragma], name: str) -> List[Pragma]:
    return [p for p in pragmas if p.get("variable") == name]


def check_bind_storage(unit: KernelUnit, min_bytes: int = BIND_STORAGE_MIN_BYTES) -> List[Violation]:
    """Arrays above ``min_bytes`` in a concrete function carry a BIND_STORAGE pragma or are streams."""
    worst: Dict[Tuple, Tuple[int, ci.Cursor, ci.Cursor]] = {}
    for fn in unit.functions:
        for var in fn.walk_preorder():
            if var.kind != CK.VAR_DECL or var.type.get_canonical().kind != TK.CONSTANTARRAY:
                continue
            size = var.type.get_size()
            if size <= min_bytes or _is_stream(var.type):
                continue
            body = unit.pragmas_in(fn)
            if _named([p for p in body if p.directive in ("BIND_STORAGE", "STREAM")], var.spelling):
                continue
            where = (var.location.file.name, var.location.offset)
            if where not in worst or worst[where][0] < size:
                worst[where] = (size, var, fn)
    return [unit.violation("bind-storage", var,
                           f"array {var.spelling!r} in {fn.spelling}() is {size} bytes "
                           f"({var.type.spelling}) > {min_bytes}: add '#pragma HLS BIND_STORAGE "
                           f"variable={var.spelling} type=... impl=bram|uram' in the function body")
            for size, var, fn in worst.values()]


def check_single_engine(unit: KernelUnit, engine_functions: Sequence[str] = DEFAULT_ENGINE_FUNCTIONS
                        ) -> List[Violation]:
    """Each engine function: one instantiation and one call site over the call graph from the top."""
    if not engine_functions or unit.top is None:
        return []
    sites: Dict[str, Dict[Tuple, ci.Cursor]] = {name: {} for name in engine_functions}
    insts: Dict[str, Dict[Tuple, ci.Cursor]] = {name: {} for name in engine_functions}
    for fn in unit.reachable([unit.top]):
        for call, callee in unit.calls(fn):
            name = unqualified_name(callee)
            if name in sites:
                loc = call.location
                sites[name].setdefault((loc.file.name, loc.offset), call)
                insts[name].setdefault(unit.key(callee), callee)
    out = []
    for name in engine_functions:
        if not sites[name]:
            out.append(unit.violation("single-engine", unit.top,
                                      f"no call of the engine {name}() is reachable from {unit.top_name}()"))
            continue
        where = ", ".join(f"{unit.relpath(c.location.file.name)}:{c.location.line}"
                          for c in sorted(sites[name].values(), key=lambda c: (c.location.file.name, c.location.line)))
        if len(insts[name]) > 1:
            kinds = ", ".join(sorted(instantiation_name(c) for c in insts[name].values()))
            out.append(unit.violation("single-engine", unit.top,
                                      f"{len(insts[name])} instantiations of the engine {name}() (each is "
                                      f"separate hardware): {kinds}; called at {where}"))
        if len(sites[name]) > 1:
            out.append(unit.violation("single-engine", unit.top,
                                      f"{len(sites[name])} call sites of the engine {name}(): {where}"))
    return out


def _subscripts(expr: ci.Cursor) -> Optional[Tuple[ci.Cursor, List[ci.Cursor]]]:
    """``X[a][b][c]`` -> (the DECL_REF_EXPR of X, [a, b, c]); None if the base is not a plain name."""
    indices = []
    node = expr
    while node.kind == CK.ARRAY_SUBSCRIPT_EXPR:
        kids = list(node.get_children())
        if len(kids) != 2:
            return None
        indices.append(kids[1])
        node = _strip(kids[0])
    if node.kind != CK.DECL_REF_EXPR:
        return None
    return node, indices[::-1]


@dataclass(frozen=True)
class Stride:
    """An index ``var + offset``: ``offset`` is the integer literal when ``exact``, else unknown."""

    exact: bool
    offset: int = 0


def _const_local_init(ref: ci.Cursor, locals_: Mapping[str, ci.Cursor]) -> Optional[ci.Cursor]:
    """The initialiser of a const local variable the DECL_REF_EXPR ``ref`` names."""
    decl = ref.referenced
    local = locals_.get(decl.get_usr() or decl.spelling) if decl is not None else None
    if local is None or not local.type.is_const_qualified():
        return None
    init = [c for c in local.get_children() if c.kind != CK.TYPE_REF]
    return init[-1] if init else None


def _depends_on(expr: ci.Cursor, var: ci.Cursor, locals_: Mapping[str, ci.Cursor], depth: int = 1) -> bool:
    for c in expr.walk_preorder():
        if c.kind == CK.DECL_REF_EXPR and c.referenced is not None:
            if c.referenced == var:
                return True
            init = _const_local_init(c, locals_) if depth > 0 else None
            if init is not None and _depends_on(init, var, locals_, depth - 1):
                return True
    return False


def _unit_stride(index: ci.Cursor, var: ci.Cursor, locals_: Mapping[str, ci.Cursor], depth: int = 1
                 ) -> Optional[Stride]:
    """Whether the index is ``var``, ``var + literal`` (exact) or ``e + var`` / ``var + e`` with ``e`` free
    of ``var`` (offset unknown), directly or through at most one const local variable; else None."""
    node = _strip(index)
    if node.kind == CK.DECL_REF_EXPR and node.referenced is not None:
        if node.referenced == var:
            return Stride(True, 0)
        init = _const_local_init(node, locals_) if depth > 0 else None
        return _unit_stride(init, var, locals_, depth - 1) if init is not None else None
    if node.kind == CK.BINARY_OPERATOR:
        kids = list(node.get_children())
        if len(kids) != 2 or KernelUnit._binary_operator(node, kids[0]) != "+":
            return None
        for mine, other in ((kids[0], kids[1]), (kids[1], kids[0])):
            if _depends_on(other, var, locals_, depth):
                continue
            stride = _unit_stride(mine, var, locals_, depth)
            if stride is not None:
                literal = _strip(other)
                if stride.exact and literal.kind == CK.INTEGER_LITERAL:
                    return Stride(True, stride.offset + evaluate_int(literal))
                return Stride(False)
    return None


def check_partition_factors(unit: KernelUnit) -> List[Violation]:
    """Cyclic/block ARRAY_PARTITION factors cover the accesses of an unrolled loop (see module doc)."""
    out, seen = [], set()
    for fn in unit.functions:
        partitions = [p for p in unit.pragmas_in(fn, "ARRAY_PARTITION")
                      if {"cyclic", "block"} & p.flags or p.get("type") in ("cyclic", "block")]
        if not partitions:
            continue
        arrays = {c.spelling: c for c in fn.walk_preorder() if c.kind in (CK.VAR_DECL, CK.PARM_DECL)}
        locals_ = {c.get_usr() or c.spelling: c for c in fn.walk_preorder() if c.kind == CK.VAR_DECL}
        for pragma in partitions:
            for v in _check_partition(unit, fn, pragma, arrays, locals_):
                if (v.file, v.line, v.message) not in seen:
                    seen.add((v.file, v.line, v.message))
                    out.append(v)
    return out


def _check_partition(unit: KernelUnit, fn: ci.Cursor, pragma: Pragma, arrays: Mapping[str, ci.Cursor],
                     locals_: Mapping[str, ci.Cursor]) -> List[Violation]:
    name = pragma.get("variable")
    array = arrays.get(name)
    kind = "cyclic" if "cyclic" in pragma.flags or pragma.get("type") == "cyclic" else "block"
    factor = unit.resolve_int(pragma.get("factor"), fn)
    dim = unit.resolve_int(pragma.get("dim", "1"), fn)
    if array is None or factor is None or factor <= 0 or dim is None:
        return []
    shape = _array_dims(array.type)
    dims = range(1, len(shape) + 1) if dim == 0 else [dim]
    out = []
    for loop in unit.loops(fn):
        unroll = unit.own_pragmas(loop, "UNROLL")
        var = unit.loop_variable(loop)
        if not unroll or var is None or loop.body is None or not unit.unit_step(loop, var):
            continue
        u_word = unroll[0].get("factor")
        count = unit.resolve_int(u_word, fn) if u_word is not None else unit.constant_trip_count(loop)
        if count is None:
            continue
        for expr in loop.body.walk_preorder():
            if expr.kind != CK.ARRAY_SUBSCRIPT_EXPR:
                continue
            sub = _subscripts(expr)
            if sub is None or sub[0].spelling != name or len(sub[1]) != len(shape):
                continue
            for d in dims:
                if d > len(shape):
                    continue
                stride = _unit_stride(sub[1][d - 1], var, locals_)
                if stride is None:
                    continue
                per_bank = _accesses_per_bank(kind, count, factor, shape[d - 1], stride,
                                              evaluate_int(var))
                if per_bank is not None and per_bank > 2:
                    out.append(unit.violation(
                        "partition-factor", expr,
                        f"{name}[...] dim {d} is read/written at {count} consecutive indices per unrolled "
                        f"iteration of loop '{var.spelling}' (line {loop.cursor.location.line}) but "
                        f"ARRAY_PARTITION {kind} factor={factor} (line {pragma.line}) gives {per_bank} "
                        f"accesses per dual-port bank"))
    return out


def _accesses_per_bank(kind: str, count: int, factor: int, size: int, stride: Stride,
                       start: Optional[int]) -> Optional[int]:
    """Most accesses to one bank among ``count`` consecutive elements (see the module doc), or None."""
    if kind == "cyclic":
        return -(-count // factor)          # any alignment: ceil(count / factor)
    if not stride.exact or start is None:
        return None
    block = -(-size // factor)              # the first unrolled iteration: indices first .. first + count - 1
    first = start + stride.offset
    banks: Dict[int, int] = {}
    for i in range(first, first + count):
        banks[i // block] = banks.get(i // block, 0) + 1
    return max(banks.values())


def _maxi_direction_keys(direction: str) -> List[Tuple[str, ...]]:
    keys = []
    if direction in ("in", "inout"):
        keys += [("max_read_burst_length",), ("num_read_outstanding",)]
    if direction in ("out", "inout"):
        keys += [("max_write_burst_length",), ("num_write_outstanding",)]
    return keys


def check_maxi_ports(unit: KernelUnit, wide_ports: str = DEFAULT_WIDE_PORTS,
                     port_directions: Optional[Mapping[str, str]] = None) -> List[Violation]:
    """m_axi pragmas of the top: depth, burst length and outstanding per direction; wide weight/KV ports."""
    if unit.top is None:
        return []
    params = {p.spelling: p for p in unit.top.get_children() if p.kind == CK.PARM_DECL}
    pragmas = {}
    for p in unit.pragmas_in(unit.top, "INTERFACE"):
        if "m_axi" in p.flags or p.get("mode") == "m_axi":
            pragmas[p.get("port")] = p
    out = []
    wide = re.compile(wide_ports)
    for name, param in params.items():
        t = param.type.get_canonical()
        if t.kind == TK.POINTER and name not in pragmas:
            out.append(unit.violation("m-axi-ports", param,
                                      f"pointer port {name!r} of {unit.top_name}() has no "
                                      f"'#pragma HLS INTERFACE m_axi port={name}'"))
    for name, pragma in pragmas.items():
        param = params.get(name)
        if param is None:
            out.append(Violation("m-axi-ports", unit.relpath(unit.top.location.file.name), pragma.line,
                                 f"INTERFACE m_axi port={name} names no parameter of {unit.top_name}()"))
            continue
        pointee = param.type.get_canonical().get_pointee()
        direction = (port_directions or {}).get(name) or ("in" if pointee.is_const_qualified() else "inout")
        missing = [key for (key,) in [("depth",), *_maxi_direction_keys(direction)] if pragma.get(key) is None]
        if missing:
            out.append(Violation("m-axi-ports", unit.relpath(unit.top.location.file.name), pragma.line,
                                 f"m_axi port {name!r} ({direction}) lacks {', '.join(missing)}"))
        bits = pointee.get_size() * 8
        if wide.search(name) and 0 < bits < WIDE_PORT_MIN_BITS:
            out.append(Violation("m-axi-ports", unit.relpath(unit.top.location.file.name), pragma.line,
                                 f"m_axi port {name!r} is {bits} bits wide ({pointee.spelling}); weight and "
                                 f"KV-cache ports need >= {WIDE_PORT_MIN_BITS}-bit words"))
    return out


def check_loop_tripcounts(unit: KernelUnit) -> List[Violation]:
    """Loops with a non-constant bound that are not fully unrolled carry their own LOOP_TRIPCOUNT."""
    out, seen = [], set()
    for fn in unit.functions:
        if is_constexpr(fn):
            continue
        for loop in unit.loops(fn):
            where = (loop.cursor.location.file.name, loop.cursor.location.offset)
            if where in seen or loop.body is None:
                continue
            if unit.has_constant_bound(loop):
                continue
            unrolls = unit.own_pragmas(loop, "UNROLL")
            if any(p.get("factor") is None for p in unrolls):
                continue
            if unit.own_pragmas(loop, "LOOP_TRIPCOUNT"):
                continue
            seen.add(where)
            label = {CK.FOR_STMT: "for", CK.WHILE_STMT: "while", CK.DO_STMT: "do"}[loop.cursor.kind]
            cond = " ".join(_token_spellings(loop.cond)) if loop.cond is not None else "?"
            out.append(unit.violation("loop-tripcount", loop.cursor,
                                      f"{label} loop in {fn.spelling}() with variable bound ({cond}) has no "
                                      f"'#pragma HLS LOOP_TRIPCOUNT'"))
    return out


# ---------------------------------------------------------------------------------------------------
# entry points

def check_kernel(source_path, top_function: str, engine_functions: Sequence[str] = DEFAULT_ENGINE_FUNCTIONS, *,
                 include_dirs: Optional[Sequence] = None, project_root=None, wide_ports: str = DEFAULT_WIDE_PORTS,
                 port_directions: Optional[Mapping[str, str]] = None) -> List[Violation]:
    """All rules on one kernel source. ``include_dirs`` default: the source's directory and its
    ``flexllm/`` subdirectory; ``project_root`` (files checked, paths reported) default: the source's
    directory."""
    source = Path(source_path).resolve()
    includes = [Path(d) for d in include_dirs] if include_dirs is not None else [source.parent,
                                                                                  source.parent / "flexllm"]
    unit = KernelUnit(source, top_function, includes, Path(project_root) if project_root else source.parent)
    return [*check_syntax(unit), *check_pointer_params(unit), *check_bind_storage(unit),
            *check_single_engine(unit, engine_functions), *check_partition_factors(unit),
            *check_maxi_ports(unit, wide_ports, port_directions), *check_loop_tripcounts(unit)]


def check_project(project_dir, engine_functions: Sequence[str] = DEFAULT_ENGINE_FUNCTIONS
                  ) -> Dict[str, List[Violation]]:
    """All rules on every kernel of a ``flexllm build`` project (read from ``flexllm_build.json``)."""
    root = Path(project_dir).resolve()
    info = json.loads((root / "flexllm_build.json").read_text())
    result = {}
    for kernel in info["project"]["kernels"]:
        includes = [root / d for d in kernel.get("includes", ["firmware", "firmware/flexllm"])]
        directions = {p["name"]: p.get("direction", "inout") for p in kernel.get("ports", [])
                      if p.get("kind") == "m_axi"}
        result[kernel["name"]] = check_kernel(root / kernel["source"], kernel["name"], engine_functions,
                                              include_dirs=includes, project_root=root,
                                              port_directions=directions)
    return result
