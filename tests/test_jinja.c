/* The chat-template interpreter: Jinja2 semantics as transformers runs chat
 * templates (trim_blocks and lstrip_blocks on, Python value formatting), and
 * clear errors for malformed templates. The real templates are checked byte
 * for byte in test_tokenizer. */
#include "vlm.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void expect(const char *tpl, const char *want) {
    char *out = NULL;
    vlm_error err = {0};
    vlm_chat_msg m = {"user", "hi", NULL, 0};
    vlm_status st = vlm_chat_render(tpl, &m, 1, NULL, &out, &err);
    CHECK(st == VLM_OK, "template <%s>: %s", tpl, err.msg);
    CHECK(out && !strcmp(out, want), "template <%s>: got <%s> want <%s>", tpl, out ? out : "", want);
    free(out);
}

static void expect_error(const char *tpl, const char *what) {
    char *out = NULL;
    vlm_error err = {0};
    vlm_chat_msg m = {"user", "hi", NULL, 0};
    vlm_status st = vlm_chat_render(tpl, &m, 1, NULL, &out, &err);
    CHECK(st != VLM_OK && out == NULL, "template <%s> should fail", tpl);
    CHECK(strstr(err.msg, what) != NULL, "template <%s>: error '%s' lacks '%s'", tpl, err.msg, what);
    free(out);
}

/* A template is a program from the Hub: a runaway one stops fast, with a
 * one-line error naming the budget, and memory stays small. */
static void expect_budget(const char *what, const char *tpl, const vlm_limits *lim, const char *needle) {
    char *out = NULL;
    vlm_error err = {0};
    vlm_chat_msg m = {"user", "hi", NULL, 0};
    vlm_chat_opts o = {.limits = lim};
    double t0 = vlm_time_s();
    vlm_status st = vlm_chat_render(tpl, &m, 1, &o, &out, &err);
    double s = vlm_time_s() - t0;
    CHECK(st == VLM_ERR_LIMIT && !out && strstr(err.msg, needle) && !strchr(err.msg, '\n'),
          "%s: %s (%s)", what, vlm_status_name(st), err.msg);
    CHECK(s < 10, "%s: stopped after %.1f s", what, s);
    printf("%s: %.2f s: %s\n", what, s, err.msg);
    free(out);
}

static void test_budgets(void) {
    expect_budget("two nested range(100000) loops",
                  "{% for i in range(100000) %}{% for j in range(100000) %}hello{% endfor %}{% endfor %}", NULL,
                  "vlm_limits.template_");
    expect_budget("eight nested for loops",
                  "{% for a in range(10) %}{% for b in range(10) %}{% for c in range(10) %}{% for d in range(10) %}"
                  "{% for e in range(10) %}{% for f in range(10) %}{% for g in range(10) %}{% for h in range(10) %}x"
                  "{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
                  NULL, "vlm_limits.template_");
    expect_budget("a string doubled by ~ forty times (1 TB)",
                  "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                  "{{ ns.s | length }}", NULL, "template_memory");
    vlm_limits few = {.template_steps = 1000};
    expect_budget("a 1000-step budget", "{% for i in range(2000) %}{{ i }}{% endfor %}", &few, "template_steps");
    vlm_limits small_out = {.template_output = 1000};
    expect_budget("a 1000-byte output budget", "{% for i in range(300) %}{{ 'abcd' }}{% endfor %}", &small_out,
                  "template_output");
    /* the memory budget counts an allocation before it is made: 200 kB more does not fit 256 KiB */
    vlm_limits small_mem = {.template_memory = 256 << 10};
    expect_budget("a 200 kB string under a 256 KiB budget", "{{ 'x' * 200000 }}", &small_mem, "template_memory");
    {
        char *out = NULL;
        vlm_error err = {0};
        vlm_chat_msg m = {"user", "hi", NULL, 0};
        vlm_chat_opts o = {.limits = &small_mem};
        CHECK(vlm_chat_render("{{ 'x' * 100000 }}", &m, 1, &o, &out, &err) == VLM_OK && out && strlen(out) == 100000,
              "a 100 kB string fits 256 KiB: %s", err.msg);
        free(out);
    }
    expect_error("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "too deep");
    /* the same loops within the budgets render */
    expect("{% for i in range(3) %}{% for j in range(2) %}{{ i }}{{ j }} {% endfor %}{% endfor %}",
           "00 01 10 11 20 21 ");
    double rss = vlm_peak_rss_mib();
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) /* their shadow memory is not the template's */
    CHECK(rss < 200, "peak RSS %.0f MiB after the runaway templates", rss);
#endif
    printf("peak RSS after the runaway templates: %.0f MiB\n", rss);
}

/* Inputs the fuzzer found (tests/data/fuzz/jinja-*.bin: a template, NUL,
 * messages JSON): each renders or fails with a message, and stays clean
 * under the sanitizers (make test SAN=1). */
static void test_fuzz_regressions(void) {
    static const char *const files[] = {"tests/data/fuzz/jinja-empty-literal-memcpy-null.bin"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        FILE *f = fopen(files[k], "rb");
        CHECK(f != NULL, "%s", files[k]);
        if (!f) continue;
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0; /* the template ends at the first NUL */
        char *out = NULL;
        vlm_error err = {0};
        vlm_chat_msg m = {"user", "hi", NULL, 0};
        vlm_status st = vlm_chat_render(buf, &m, 1, NULL, &out, &err);
        CHECK(st == VLM_OK || err.msg[0], "%s: a failure without a message", files[k]);
        free(out);
    }
}

int main(void) {
    test_fuzz_regressions();
    test_budgets();
    /* Whitespace: trim_blocks, lstrip_blocks, '-' markers, comments. */
    expect("  {% if true %}\nA\n  {% endif %}\nB", "A\nB");
    expect("a  {%- if true -%}  b  {%- endif %} c", "ab c");
    expect("x {# note #}\ny", "x y");
    expect("{{ 'a' }}\n{{ 'b' }}", "a\nb");
    expect("{% raw %}{{ x }}{% endraw %}", "{{ x }}");
    /* Values as Python prints them. */
    expect("{{ none }}|{{ true }}|{{ 1.5 }}|{{ 2.0 }}|{{ 10 }}|{{ undefined_thing }}", "None|True|1.5|2.0|10|");
    expect("{{ [1, 'a', none] }}|{{ {'k': [true]} }}", "[1, 'a', None]|{'k': [True]}");
    expect("{{ [\"it's\", 'a\"b', 'x\\ny'] }}", "[\"it's\", 'a\"b', 'x\\ny']");
    /* Operators. */
    expect("{{ 'a' ~ 1 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 7 / 2 }}|{{ 'ab' * 2 }}", "a1|3|-4|2|1024|3.5|abab");
    expect("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ [1] + [2] }}|{{ 'x' in 'axb' }}|{{ 3 not in [1, 2] }}", "7|9|[1, 2]|True|True");
    expect("{{ 'y' if 0 else 'n' }}|{{ 'y' if 1 }}|{{ not 1 or 2 }}|{{ 0 and 1 }}", "n|y|2|0");
    expect("{{ messages | length - 1 }}|{{ messages[0].role }}|{{ messages[0]['content'] }}", "0|user|hi");
    /* Indexing and slicing (by code point). */
    expect("{{ [1, 2, 3][::-1] }}|{{ [1, 2, 3][1:] }}|{{ [1, 2, 3][-1] }}|{{ 'h\xc3\xa9llo'[1:3] }}", "[3, 2, 1]|[2, 3]|3|\xc3\xa9l");
    /* Loops. */
    expect("{% for x in [1, 2, 3] %}{{ loop.index }}{{ loop.first }}{% if loop.last %}!{% endif %}{% endfor %}", "1True2False3False!");
    expect("{% for x in [] %}a{% else %}empty{% endfor %}", "empty");
    expect("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}", "02");
    expect("{% for i in range(5) if i is odd %}{{ i }}{% endfor %}|{% for i in range(4, -1, -2) %}{{ i }}{% endfor %}", "13|420");
    expect("{% for k, v in {'b': 1, 'A': 2} | dictsort %}{{ k }}={{ v }};{% endfor %}", "A=2;b=1;");
    /* case-insensitive in both directions (expected strings from jinja2 3.1) */
    expect("{% for k, v in {'Z': 1, 'a': 2, 'b': 3} | dictsort %}{{ k }}={{ v }};{% endfor %}", "a=2;b=3;Z=1;");
    expect("{% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}{{ v }}{% endfor %}", "b1a2");
    /* Scoping: loop bodies do not leak; namespaces do. */
    expect("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", "1");
    expect("{% set ns = namespace(x=1) %}{% for i in [1] %}{% set ns.x = ns.x + 1 %}{% endfor %}{{ ns.x }}", "2");
    expect("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", "5");
    /* Macros. */
    expect("{% macro f(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}{{ f(a=3) }}", "[1B][12][3B]");
    expect("{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(3) }}", "321");
    /* Filters, tests, methods. */
    expect("{{ '  a b  ' | trim }}|{{ 'ab' | upper }}|{{ 'hello world' | capitalize }}|{{ [3, 1] | first }}|{{ x | default('d') }}",
           "a b|AB|Hello world|3|d");
    expect("{{ {'a': [1, 'x\\n', true, none]} | tojson }}", "{\"a\": [1, \"x\\n\", true, null]}");
    expect("{{ ['a', 'b'] | join(', ') }}|{{ ['a', 'b'] | map('upper') | list }}|{{ [1, 2, 1] | unique | list }}", "a, b|['A', 'B']|[1, 2]");
    expect("{{ '  a b  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ 'x\\n\\n'.rstrip('\\n') }}|{{ 'a b'.split() }}",
           "a b|['a', 'b', '', 'c']|True|x|['a', 'b']");
    expect("{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b', 7) }}{{ {'a': 1}.get('b') }}", "17None");
    expect("{{ x is defined }}{{ [] is sequence }}{{ {} is mapping }}{{ 'a' is string }}{{ none is none }}{{ 1 is not string }}",
           "FalseTrueTrueTrueTrueTrue");
    expect("{{ [{'t': 'a'}, {'t': 'b'}] | selectattr('t', 'equalto', 'b') | list }}", "[{'t': 'b'}]");
    /* Errors. */
    expect_error("{{ x ", "unterminated");
    expect_error("{% if true %}a", "missing {% endif %}");
    expect_error("{% for x in %}{% endfor %}", "unexpected");
    expect_error("{{ raise_exception('boom') }}", "boom");
    expect_error("{{ 'a' | frobnicate }}", "frobnicate");
    expect_error("{% endfor %}", "endfor");
    expect_error("{{ 1 + 'a' }}", "operand");
    expect_error("{% set x.y = 1 %}", "namespace");
    expect_error("{% macro f( %}", "expected");
    expect_error("line one\n{% if x %}\n{{ 1 +* }}\n{% endif %}", "template line 3");
    /* Deep nesting fails cleanly instead of exhausting the stack. */
    {
        static char deep[400000];
        size_t k = 0;
        k += (size_t)sprintf(deep + k, "{{ ");
        for (int i = 0; i < 50000; i++) deep[k++] = '(';
        deep[k++] = '1';
        for (int i = 0; i < 50000; i++) deep[k++] = ')';
        strcpy(deep + k, " }}");
        expect_error(deep, "nested too deeply");
        k = (size_t)sprintf(deep, "{{ ");
        for (int i = 0; i < 20000; i++) { memcpy(deep + k, "not ", 4); k += 4; }
        strcpy(deep + k, "1 }}");
        expect_error(deep, "nested too deeply");
        k = 0;
        for (int i = 0; i < 20000; i++) { memcpy(deep + k, "{% if 1 %}", 10); k += 10; }
        deep[k] = 0;
        expect_error(deep, "nested too deeply");
    }
    char *out = NULL;
    vlm_error err = {0};
    CHECK(vlm_chat_render(NULL, NULL, 0, NULL, &out, &err) == VLM_ERR_ARG, "NULL template");
    TEST_MAIN_END();
}
