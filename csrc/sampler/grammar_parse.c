/* GBNF text -> compiled rules (grammar.h). The dialect is llama.cpp's
 * (grammars/README.md, accepted as its src/llama-grammar.cpp parser does):
 *
 *   rule     := name '::=' alts             (a newline ends it)
 *   alts     := seq ('|' seq)*              (newlines allowed after '|')
 *   seq      := (primary postfix*)*
 *   primary  := '"' chars '"' | '[' '^'? (char ('-' char)?)* ']' | '.'
 *             | name | '(' alts ')'          (newlines allowed inside)
 *   postfix  := '*' | '+' | '?' | '{' m '}' | '{' m ',' '}' | '{' m ',' n '}'
 *   names use [a-zA-Z0-9-]; '#' comments to the end of the line outside
 *   literals and classes; escapes \xNN \uNNNN \UNNNNNNNN \t \r \n \\ \" \[ \]
 *   (any other is an error).
 *
 * Groups and repetitions become generated rules named after the rule and
 * the line:col where they appear ("root@3:14"). Repetitions are expanded
 * (x{2,4} is x x and two nested optionals), so their counts are capped:
 * GR_MAX_REPEAT per repetition and GR_MAX_ELEMS elements in all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

#define GR_MAX_REPEAT 10000
#define GR_MAX_ELEMS (1 << 22)
#define GR_INF (1 << 28)

typedef struct evec { gr_elem *v; size_t n, cap; } evec;

typedef struct prule {
    char *name;
    evec body;            /* alternatives, each ended by GR_END */
    int defined;
    size_t ref_at;        /* offset of the first reference (for "undefined") */
} prule;

typedef struct parser {
    const char *s;
    size_t len, pos;
    prule *rules;
    size_t n_rules, cap_rules;
    gr_set *sets;
    size_t n_sets, cap_sets;
    uint32_t *ranges;
    size_t n_ranges, cap_ranges;
    size_t n_elems;       /* all elements so far (the expansion cap) */
    int failed;
    slm_error *err;
} parser;

/* ---------- errors and growth ---------- */

static void where(const parser *p, size_t at, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->s[i] == '\n') { (*line)++; *col = 1; }
        else if (((unsigned char)p->s[i] & 0xC0) != 0x80) (*col)++;   /* columns count characters */
    }
}

static int fail_at(parser *p, size_t at, const char *what, const char *detail)
{
    if (p->failed) return -1;
    int line, col;
    where(p, at, &line, &col);
    slm_error_set(p->err, SLM_EINVAL, "grammar:%d:%d: %s%s", line, col, what, detail ? detail : "");
    p->failed = 1;
    return -1;
}

static int oom(parser *p)
{
    if (!p->failed) slm_error_set(p->err, SLM_ENOMEM, "grammar: out of memory");
    p->failed = 1;
    return -1;
}

static int grow(parser *p, void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *nv = realloc(*v, nc * size);
    if (!nv) return oom(p);
    *v = nv;
    *cap = nc;
    return 0;
}

static int push_elem(parser *p, evec *e, int32_t kind, int32_t arg)
{
    if (++p->n_elems > GR_MAX_ELEMS)
        return fail_at(p, p->pos, "the grammar expands to too many elements (repetitions?)", NULL);
    if (grow(p, (void **)&e->v, &e->cap, e->n + 1, sizeof *e->v)) return -1;
    e->v[e->n++] = (gr_elem){ kind, arg };
    return 0;
}

/* ---------- rules and sets ---------- */

static int new_rule(parser *p, const char *name, size_t n)
{
    if (grow(p, (void **)&p->rules, &p->cap_rules, p->n_rules + 1, sizeof *p->rules)) return -1;
    char *copy = malloc(n + 1);
    if (!copy) return oom(p);
    memcpy(copy, name, n);
    copy[n] = 0;
    p->rules[p->n_rules] = (prule){ .name = copy, .ref_at = (size_t)-1 };
    return (int)p->n_rules++;
}

static int find_rule(parser *p, const char *name, size_t n)
{
    for (size_t i = 0; i < p->n_rules; i++)
        if (strlen(p->rules[i].name) == n && memcmp(p->rules[i].name, name, n) == 0) return (int)i;
    return new_rule(p, name, n);
}

/* A generated rule, named after its parent and where it appears. */
static int gen_rule(parser *p, int parent, size_t at)
{
    int line, col;
    where(p, at, &line, &col);
    char buf[160];
    int n = snprintf(buf, sizeof buf, "%.120s@%d:%d", p->rules[parent].name, line, col);
    int r = new_rule(p, buf, (size_t)n);
    if (r >= 0) p->rules[r].defined = 1;
    return r;
}

/* Starts a set; ranges follow with add_range. */
static int new_set(parser *p, int neg)
{
    if (grow(p, (void **)&p->sets, &p->cap_sets, p->n_sets + 1, sizeof *p->sets)) return -1;
    p->sets[p->n_sets] = (gr_set){ .off = (uint32_t)p->n_ranges, .neg = (uint8_t)neg };
    return (int)p->n_sets++;
}

static int add_range(parser *p, int set, uint32_t lo, uint32_t hi)
{
    if (grow(p, (void **)&p->ranges, &p->cap_ranges, p->n_ranges + 2, sizeof *p->ranges)) return -1;
    p->ranges[p->n_ranges++] = lo;
    p->ranges[p->n_ranges++] = hi;
    p->sets[set].n++;
    return 0;
}

/* ---------- lexing ---------- */

static int at_end(const parser *p) { return p->pos >= p->len; }
static int cur(const parser *p) { return at_end(p) ? -1 : (unsigned char)p->s[p->pos]; }

static int is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Skips blanks and comments; newlines too when nl. */
static void skip_space(parser *p, int nl)
{
    while (!at_end(p)) {
        int c = cur(p);
        if (c == ' ' || c == '\t' || (nl && (c == '\n' || c == '\r'))) p->pos++;
        else if (c == '#') {
            while (!at_end(p) && cur(p) != '\n') p->pos++;
        } else break;
    }
}

/* One UTF-8 code point of the grammar text. */
static int read_utf8(parser *p, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)p->s + p->pos;
    size_t left = p->len - p->pos;
    unsigned c = s[0];
    int n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!n || (size_t)n > left) return fail_at(p, p->pos, "invalid UTF-8 in the grammar", NULL);
    uint32_t v = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return fail_at(p, p->pos, "invalid UTF-8 in the grammar", NULL);
        v = v << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (v < min[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return fail_at(p, p->pos, "invalid UTF-8 in the grammar", NULL);
    p->pos += (size_t)n;
    *cp = v;
    return 0;
}

/* A character of a literal or class: an escape or a UTF-8 code point. */
static int read_char(parser *p, uint32_t *cp)
{
    if (at_end(p)) return fail_at(p, p->pos, "unexpected end of the grammar", NULL);
    if (cur(p) != '\\') return read_utf8(p, cp);
    size_t at = p->pos;
    p->pos++;
    if (at_end(p)) return fail_at(p, at, "unexpected end of the grammar after '\\'", NULL);
    int c = cur(p);
    p->pos++;
    int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (digits) {
        uint32_t v = 0;
        for (int i = 0; i < digits; i++) {
            int h = cur(p);
            int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (d < 0) {
                char msg[64];
                snprintf(msg, sizeof msg, "'\\%c' needs %d hex digits", c, digits);
                return fail_at(p, at, msg, NULL);
            }
            v = v << 4 | (uint32_t)d;
            p->pos++;
        }
        if (v > 0x10FFFF) return fail_at(p, at, "escape beyond U+10FFFF", NULL);
        *cp = v;
        return 0;
    }
    switch (c) {
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'n': *cp = '\n'; return 0;
    case '\\': case '"': case '[': case ']': *cp = (uint32_t)c; return 0;
    default: {
        char msg[48];
        snprintf(msg, sizeof msg, "unknown escape '\\%c'", c > 32 && c < 127 ? c : '?');
        return fail_at(p, at, msg, NULL);
    }
    }
}

/* ---------- syntax ---------- */

static int parse_alts(parser *p, int rule, evec *body, int nested);

/* Moves body[start..) into a new rule with that one alternative, leaving a
 * reference to it: repetition then works on one element. */
static int wrap(parser *p, int rule, evec *body, size_t start, size_t at)
{
    int r = gen_rule(p, rule, at);
    if (r < 0) return -1;
    for (size_t i = start; i < body->n; i++)
        if (push_elem(p, &p->rules[r].body, body->v[i].kind, body->v[i].arg)) return -1;
    if (push_elem(p, &p->rules[r].body, GR_END, 0)) return -1;
    body->n = start;
    return push_elem(p, body, GR_REF, r);
}

static int read_count(parser *p, long *v)
{
    if (cur(p) < '0' || cur(p) > '9') return fail_at(p, p->pos, "expected a number in { }", NULL);
    *v = 0;
    size_t at = p->pos;
    while (cur(p) >= '0' && cur(p) <= '9') {
        *v = *v * 10 + (cur(p) - '0');
        if (*v > GR_MAX_REPEAT) return fail_at(p, at, "repetition count above 10000", NULL);
        p->pos++;
    }
    return 0;
}

/* Applies x{m,n} (n < 0: unbounded) to the single element body[n-1]. */
static int repeat(parser *p, int rule, evec *body, long m, long n, size_t at)
{
    gr_elem x = body->v[--body->n];
    for (long i = 0; i < m; i++)
        if (push_elem(p, body, x.kind, x.arg)) return -1;
    if (n < 0) {                          /* R ::= x R | empty */
        int r = gen_rule(p, rule, at);
        if (r < 0) return -1;
        evec *b = &p->rules[r].body;
        if (push_elem(p, b, x.kind, x.arg) || push_elem(p, b, GR_REF, r) || push_elem(p, b, GR_END, 0) ||
            push_elem(p, b, GR_END, 0))
            return -1;
        return push_elem(p, body, GR_REF, r);
    }
    int prev = -1;                        /* R1 ::= x | empty; Rk ::= x R(k-1) | empty */
    for (long k = 1; k <= n - m; k++) {
        int r = gen_rule(p, rule, at);
        if (r < 0) return -1;
        evec *b = &p->rules[r].body;
        if (push_elem(p, b, x.kind, x.arg)) return -1;
        if (prev >= 0 && push_elem(p, b, GR_REF, prev)) return -1;
        if (push_elem(p, b, GR_END, 0) || push_elem(p, b, GR_END, 0)) return -1;
        prev = r;
    }
    return prev >= 0 ? push_elem(p, body, GR_REF, prev) : 0;
}

static int parse_postfix(parser *p, int rule, evec *body, size_t start)
{
    for (;;) {
        int c = cur(p);
        if (c != '*' && c != '+' && c != '?' && c != '{') return 0;
        size_t at = p->pos;
        if (body->n == start) return fail_at(p, at, "nothing to repeat before the operator", NULL);
        if (body->n - start > 1 && wrap(p, rule, body, start, at)) return -1;
        long m = 0, n = -1;
        p->pos++;
        if (c == '+') m = 1;
        else if (c == '?') n = 1;
        else if (c == '{') {
            skip_space(p, 0);
            if (read_count(p, &m)) return -1;
            skip_space(p, 0);
            if (cur(p) == ',') {
                p->pos++;
                skip_space(p, 0);
                if (cur(p) != '}' && read_count(p, &n)) return -1;
                skip_space(p, 0);
            } else n = m;
            if (cur(p) != '}') return fail_at(p, p->pos, "expected '}'", NULL);
            p->pos++;
            if (n >= 0 && n < m) return fail_at(p, at, "repetition {m,n} with n < m", NULL);
        }
        /* a further operator (x{2}?, x+*) applies to all that x became */
        if (repeat(p, rule, body, m, n, at)) return -1;
    }
}

static int parse_literal(parser *p, evec *body)
{
    size_t open = p->pos++;
    while (cur(p) != '"') {
        if (at_end(p)) return fail_at(p, open, "unterminated literal", NULL);
        uint32_t cp;
        if (read_char(p, &cp)) return -1;
        int s = new_set(p, 0);
        if (s < 0 || add_range(p, s, cp, cp) || push_elem(p, body, GR_SET, s)) return -1;
    }
    p->pos++;
    return 0;
}

static int parse_class(parser *p, evec *body)
{
    size_t open = p->pos++;
    int neg = cur(p) == '^';
    if (neg) p->pos++;
    int s = new_set(p, neg);
    if (s < 0) return -1;
    while (cur(p) != ']') {
        if (at_end(p)) return fail_at(p, open, "unterminated character class", NULL);
        size_t at = p->pos;
        uint32_t lo, hi;
        if (read_char(p, &lo)) return -1;
        hi = lo;
        if (cur(p) == '-' && p->pos + 1 < p->len && p->s[p->pos + 1] != ']') {
            p->pos++;
            if (read_char(p, &hi)) return -1;
            if (hi < lo) return fail_at(p, at, "range out of order in the class", NULL);
        }
        if (add_range(p, s, lo, hi)) return -1;
    }
    p->pos++;
    return push_elem(p, body, GR_SET, s);
}

/* A sequence up to '|', ')' or (outside groups) the end of the line. */
static int parse_seq(parser *p, int rule, evec *body, int nested)
{
    for (;;) {
        skip_space(p, nested);
        int c = cur(p);
        size_t start = body->n, at = p->pos;
        if (c == '"') {
            if (parse_literal(p, body)) return -1;
        } else if (c == '[') {
            if (parse_class(p, body)) return -1;
        } else if (c == '.') {
            p->pos++;
            int s = new_set(p, 1);      /* the complement of nothing */
            if (s < 0 || push_elem(p, body, GR_SET, s)) return -1;
        } else if (c == '(') {
            p->pos++;
            int r = gen_rule(p, rule, at);
            if (r < 0) return -1;
            evec sub = { 0 };
            int rc = parse_alts(p, rule, &sub, 1);
            p->rules[r].body = sub;
            if (rc) return -1;
            skip_space(p, 1);
            if (cur(p) != ')') return fail_at(p, p->pos, "expected ')'", NULL);
            p->pos++;
            if (push_elem(p, body, GR_REF, r)) return -1;
        } else if (c >= 0 && is_name_char(c)) {
            size_t n0 = p->pos;
            while (is_name_char(cur(p))) p->pos++;
            /* the next rule's "name ::=" on a new line ends this one: only
             * reached when nested (a newline inside a group) */
            size_t save = p->pos;
            skip_space(p, 0);
            if (p->pos + 3 <= p->len && strncmp(p->s + p->pos, "::=", 3) == 0)
                return fail_at(p, n0, "rule definition inside a group or after '|' (missing ')'?)", NULL);
            p->pos = save;
            int r = find_rule(p, p->s + n0, p->pos - n0);
            if (r < 0) return -1;
            if (p->rules[r].ref_at == (size_t)-1) p->rules[r].ref_at = n0;
            if (push_elem(p, body, GR_REF, r)) return -1;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            return fail_at(p, at, "nothing to repeat before the operator", NULL);
        } else return 0;
        if (parse_postfix(p, rule, body, start)) return -1;
    }
}

static int parse_alts(parser *p, int rule, evec *body, int nested)
{
    for (;;) {
        if (parse_seq(p, rule, body, nested) || push_elem(p, body, GR_END, 0)) return -1;
        skip_space(p, nested);
        if (cur(p) != '|') return 0;
        p->pos++;
        skip_space(p, 1);   /* a newline may follow '|' */
    }
}

static int parse_rule(parser *p)
{
    size_t n0 = p->pos;
    while (is_name_char(cur(p))) p->pos++;
    if (p->pos == n0) return fail_at(p, n0, "expected a rule name", NULL);
    int r = find_rule(p, p->s + n0, p->pos - n0);
    if (r < 0) return -1;
    if (p->rules[r].defined) return fail_at(p, n0, "rule defined twice: ", p->rules[r].name);
    p->rules[r].defined = 1;
    skip_space(p, 0);
    if (p->pos + 3 > p->len || strncmp(p->s + p->pos, "::=", 3) != 0)
        return fail_at(p, p->pos, "expected '::='", NULL);
    p->pos += 3;
    skip_space(p, 1);   /* the body may start on the next line (as the reference allows) */
    evec body = { 0 };
    int rc = parse_alts(p, r, &body, 0);
    free(p->rules[r].body.v);
    p->rules[r].body = body;
    if (rc) return -1;
    skip_space(p, 0);
    if (!at_end(p) && cur(p) != '\n' && cur(p) != '\r')
        return fail_at(p, p->pos, "expected the end of the line, '|' or an item", NULL);
    return 0;
}

/* ---------- checks and flattening ---------- */

static int utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

static void finish_set(slm_grammar *g, gr_set *s)
{
    const uint32_t *r = s->n ? g->ranges + s->off : NULL;   /* (no ranges at all: ranges is NULL) */
    for (uint32_t c = 0; c < 128; c++)
        if (gr_set_meets(g, s, c, c)) s->ascii[c >> 6] |= 1ull << (c & 63);   /* ascii is zero here */
    uint32_t least = 0x110000;
    if (!s->neg) {
        for (uint32_t i = 0; i < s->n; i++) if (r[2 * i] < least && r[2 * i] <= r[2 * i + 1]) least = r[2 * i];
    } else {
        uint32_t c = 0;
        for (int moved = 1; moved && c <= 0x10FFFF;) {
            moved = 0;
            for (uint32_t i = 0; i < s->n; i++)
                if (c >= r[2 * i] && c <= r[2 * i + 1]) { c = r[2 * i + 1] + 1; moved = 1; }
        }
        least = c;
    }
    s->minbytes = (uint8_t)(least > 0x10FFFF ? 5 : utf8_len(least));
}

static int32_t sat_add(int32_t a, int32_t b) { return a >= GR_INF - b ? GR_INF : a + b; }

static int32_t elem_cost(const slm_grammar *g, gr_elem e)
{
    if (e.kind == GR_SET) return g->sets[e.arg].minbytes > 4 ? GR_INF : g->sets[e.arg].minbytes;
    return g->minlen[e.arg];
}

/* Fewest bytes per rule (iterated to a fixpoint: values only fall) and per
 * element to the end of its alternative. */
static void lengths(slm_grammar *g)
{
    for (int32_t r = 0; r < g->n_rules; r++) g->minlen[r] = GR_INF;
    /* passes alternate in direction, so chains of rules in either order of
     * definition settle in a few passes */
    for (int changed = 1, pass = 0; changed; pass++) {
        changed = 0;
        for (int32_t i = 0; i < g->n_rules; i++) {
            int32_t r = pass & 1 ? i : g->n_rules - 1 - i;
            int32_t best = g->minlen[r];
            for (int32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++) {
                int32_t sum = 0;
                for (int32_t e = g->alt[a]; g->el[e].kind != GR_END; e++) sum = sat_add(sum, elem_cost(g, g->el[e]));
                if (sum < best) best = sum;
            }
            if (best < g->minlen[r]) { g->minlen[r] = best; changed = 1; }
        }
    }
    for (int32_t e = g->n_el - 1; e >= 0; e--)
        g->suffix[e] = g->el[e].kind == GR_END ? 0 : sat_add(elem_cost(g, g->el[e]), g->suffix[e + 1]);
}

/* Left recursion: a rule that can begin with itself (through rules that
 * match the empty string) would make the matcher expand forever. A DFS over
 * the edges "r can begin with s"; each frame keeps where its scan is (the
 * alternative and the element), so every element is looked at once. */
static int left_recursion(slm_grammar *g, slm_error *err)
{
    int32_t n = g->n_rules;
    uint8_t *color = calloc((size_t)n + 1, 1);
    int32_t *stack = malloc(sizeof *stack * ((size_t)n * 3 + 3));
    int rc = 0;
    if (!color || !stack) { rc = -1; slm_error_set(err, SLM_ENOMEM, "grammar: out of memory"); goto out; }
    for (int32_t r0 = 0; r0 < n && !rc; r0++) {
        if (color[r0]) continue;
        int32_t sp = 0;
        stack[sp++] = r0;
        stack[sp++] = g->rule_alt[r0];   /* the alternative being scanned */
        stack[sp++] = -1;                /* the element, -1: its start */
        color[r0] = 1;
        while (sp && !rc) {
            int32_t r = stack[sp - 3], *a = &stack[sp - 2], *k = &stack[sp - 1];
            int32_t next = -1;
            while (*a < g->rule_alt[r + 1]) {
                if (*k < 0) *k = g->alt[*a];
                else if (g->el[*k].kind == GR_REF && g->minlen[g->el[*k].arg] == 0) (*k)++;   /* nullable: go on */
                else *k = -2;
                if (*k >= 0 && g->el[*k].kind == GR_REF) { next = g->el[*k].arg; break; }
                (*a)++;
                *k = -1;
            }
            if (next < 0) { color[r] = 2; sp -= 3; continue; }
            if (color[next] == 1) {
                slm_error_set(err, SLM_EINVAL, "grammar: rule '%s' is left-recursive (it can begin with itself); "
                              "write it right-recursive or with a repetition", g->names[next]);
                rc = -1;
            } else if (color[next] == 0) {
                color[next] = 1;
                stack[sp++] = next;
                stack[sp++] = g->rule_alt[next];
                stack[sp++] = -1;
            }
        }
    }
out:
    free(color);
    free(stack);
    return rc;
}

static slm_grammar *build(parser *p, const char *root, slm_error *err)
{
    slm_grammar *g = calloc(1, sizeof *g);
    if (!g) { oom(p); return NULL; }
    g->n_rules = (int32_t)p->n_rules;
    g->n_sets = (int32_t)p->n_sets;
    size_t n_alt = 0, n_el = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        n_el += p->rules[r].body.n;
        for (size_t i = 0; i < p->rules[r].body.n; i++) n_alt += p->rules[r].body.v[i].kind == GR_END;
    }
    g->n_el = (int32_t)n_el;
    g->el = malloc(sizeof *g->el * (n_el + 1));
    g->alt = malloc(sizeof *g->alt * (n_alt + 1));
    g->rule_alt = malloc(sizeof *g->rule_alt * (p->n_rules + 1));
    g->names = calloc(p->n_rules + 1, sizeof *g->names);
    g->suffix = malloc(sizeof *g->suffix * (n_el + 1));
    g->minlen = malloc(sizeof *g->minlen * (p->n_rules + 1));
    g->sets = p->sets;
    g->ranges = p->ranges;
    p->sets = NULL;
    p->ranges = NULL;
    if (!g->el || !g->alt || !g->rule_alt || !g->names || !g->suffix || !g->minlen) {
        oom(p);
        slm_grammar_free(g);
        return NULL;
    }
    size_t k = 0, a = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        g->names[r] = p->rules[r].name;
        p->rules[r].name = NULL;
        g->rule_alt[r] = (int32_t)a;
        evec *b = &p->rules[r].body;
        for (size_t i = 0; i < b->n; i++) {
            if (i == 0 || b->v[i - 1].kind == GR_END) g->alt[a++] = (int32_t)k;
            g->el[k++] = b->v[i];
        }
    }
    g->rule_alt[p->n_rules] = (int32_t)a;
    for (int32_t s = 0; s < g->n_sets; s++) finish_set(g, &g->sets[s]);
    lengths(g);
    g->root = -1;
    for (int32_t r = 0; r < g->n_rules; r++)
        if (strcmp(g->names[r], root) == 0) g->root = r;
    if (g->root < 0) {
        slm_error_set(err, SLM_EINVAL, "grammar: no rule '%.100s' (the start rule)", root);
        slm_grammar_free(g);
        return NULL;
    }
    if (left_recursion(g, err) || gr_pool_init(g, err)) {
        slm_grammar_free(g);
        return NULL;
    }
    return g;
}

slm_grammar *slm_grammar_compile(const char *text, size_t len, const char *root, slm_error *err)
{
    parser p = { .s = text, .len = len, .err = err };
    slm_grammar *g = NULL;
    if (!root) root = "root";
    for (;;) {
        skip_space(&p, 1);
        if (at_end(&p)) break;
        if (parse_rule(&p)) goto out;
    }
    for (size_t r = 0; r < p.n_rules; r++)
        if (!p.rules[r].defined) {
            fail_at(&p, p.rules[r].ref_at, "undefined rule: ", p.rules[r].name);
            goto out;
        }
    g = build(&p, root, err);
out:
    for (size_t r = 0; r < p.n_rules; r++) {
        free(p.rules[r].name);
        free(p.rules[r].body.v);
    }
    free(p.rules);
    free(p.sets);
    free(p.ranges);
    return g;
}

void slm_grammar_free(slm_grammar *g)
{
    if (!g) return;
    if (g->names)
        for (int32_t r = 0; r < g->n_rules; r++) free(g->names[r]);
    gr_cache_free(g);
    gr_pool_free(g);
    free(g->names);
    free(g->el);
    free(g->alt);
    free(g->rule_alt);
    free(g->sets);
    free(g->ranges);
    free(g->suffix);
    free(g->minlen);
    free(g);
}

/* ---------- describe ---------- */

typedef struct sbuf { char *s; size_t n, cap; int bad; } sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->bad) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) { b->bad = 1; return; }
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void put_cp(sbuf *b, uint32_t c)
{
    char tmp[16];
    int n;
    if (c == '\\' || c == '"' || c == '[' || c == ']' || c == '-' || c == '^') n = snprintf(tmp, sizeof tmp, "\\%c", (int)c);
    else if (c >= 0x20 && c < 0x7f) n = snprintf(tmp, sizeof tmp, "%c", (int)c);
    else if (c <= 0xff) n = snprintf(tmp, sizeof tmp, "\\x%02X", (unsigned)c);
    else if (c <= 0xffff) n = snprintf(tmp, sizeof tmp, "\\u%04X", (unsigned)c);
    else n = snprintf(tmp, sizeof tmp, "\\U%08X", (unsigned)c);
    put(b, tmp, (size_t)n);
}

char *slm_grammar_describe(const slm_grammar *g)
{
    sbuf b = { 0 };
    for (int32_t r = 0; r < g->n_rules; r++) {
        put(&b, g->names[r], strlen(g->names[r]));
        put(&b, " ::=", 4);
        for (int32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++) {
            if (a > g->rule_alt[r]) put(&b, " |", 2);
            for (int32_t e = g->alt[a]; g->el[e].kind != GR_END; e++) {
                put(&b, " ", 1);
                if (g->el[e].kind == GR_REF) {
                    put(&b, g->names[g->el[e].arg], strlen(g->names[g->el[e].arg]));
                    continue;
                }
                const gr_set *s = &g->sets[g->el[e].arg];
                const uint32_t *rg = s->n ? g->ranges + s->off : NULL;
                if (s->neg && s->n == 0) { put(&b, ".", 1); continue; }
                put(&b, s->neg ? "[^" : "[", s->neg ? 2 : 1);
                for (uint32_t i = 0; i < s->n; i++) {
                    put_cp(&b, rg[2 * i]);
                    if (rg[2 * i + 1] != rg[2 * i]) { put(&b, "-", 1); put_cp(&b, rg[2 * i + 1]); }
                }
                put(&b, "]", 1);
            }
        }
        put(&b, "\n", 1);
    }
    if (b.bad || !b.s) { free(b.s); return b.bad ? NULL : calloc(1, 1); }
    return b.s;
}
