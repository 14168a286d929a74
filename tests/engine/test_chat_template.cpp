// Tests of the chat template interpreter: the real templates against Jinja2's renderings, and
// the language features one by one (expected strings checked against Jinja2 3.1).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "chatai/core/json.hpp"
#include "chatai/engine/chat_template.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {

// The date the test data was rendered with: strftime_now() returns 2024-07-26.
render_options fixed_clock() {
  std::tm day{};
  day.tm_year = 2024 - 1900;
  day.tm_mon = 6;
  day.tm_mday = 26;
  day.tm_wday = 5;
  day.tm_yday = 207;
  day.tm_hour = 12;
  render_options options;
  options.now = day;
  return options;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// What rendering gives: the text, or "error: " and the message.
std::string render(std::string_view source, std::string_view context = "{}") {
  auto tmpl = chat_template::parse(source);
  if (!tmpl) return "error: " + tmpl.err().message();
  auto doc = json::parse(context);
  REQUIRE(doc.ok());
  auto out = tmpl->render(*doc, fixed_clock());
  if (!out) return "error: " + out.err().message();
  return *out;
}

errc error_code(std::string_view source, std::string_view context = "{}") {
  auto tmpl = chat_template::parse(source);
  if (!tmpl) return tmpl.err().code();
  auto doc = json::parse(context);
  REQUIRE(doc.ok());
  auto out = tmpl->render(*doc, fixed_clock());
  return out ? errc::ok : out.err().code();
}

}  // namespace

TEST_CASE("every real template renders every case as Jinja2 does") {
  const auto dir = std::filesystem::path(CHATAI_SHARED_DIR) / "testdata" / "templates";
  REQUIRE(std::filesystem::is_directory(dir));
  std::vector<std::filesystem::path> templates;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".jinja") templates.push_back(entry.path());
  std::sort(templates.begin(), templates.end());
  REQUIRE(templates.size() >= 9);

  std::size_t cases = 0, refusals = 0;
  for (const auto& path : templates) {
    const std::string name = path.stem().string();
    auto tmpl = chat_template::parse(read_file(path));
    INFO("template ", name, ": ", (tmpl ? std::string() : tmpl.err().message()));
    REQUIRE(tmpl.ok());
    std::ifstream lines(dir / (name + ".cases.jsonl"));
    std::string line;
    std::size_t line_number = 0;
    while (std::getline(lines, line)) {
      ++line_number;
      if (line.empty()) continue;
      const std::string case_name = name + ".cases.jsonl:" + std::to_string(line_number);
      INFO("case ", case_name);
      auto doc = json::parse(line);
      REQUIRE(doc.ok());
      const auto& context = (*doc)["context"];
      const auto& expected = (*doc)["expected"];
      auto out = tmpl->render(context, fixed_clock());
      ++cases;
      if (expected.IsNull()) {
        ++refusals;
        REQUIRE_MESSAGE(!out.ok(), case_name, " rendered although the template refuses it");
        CHECK(out.err().code() == errc::invalid_argument);
        CHECK(out.err().message() == context["error"].GetString());
      } else {
        REQUIRE_MESSAGE(out.ok(), case_name, " failed: ", out.err().message());
        CHECK(*out == expected.GetString());
      }
    }
  }
  CHECK(cases >= 45);
  CHECK(refusals >= 1);
}

TEST_CASE("render_chat supplies the standard variables") {
  auto messages = json::parse(R"([{"role": "user", "content": "Hi"}])");
  REQUIRE(messages.ok());
  auto extra = json::parse(R"({"bos_token": "ignored", "note": "x"})");
  REQUIRE(extra.ok());
  auto tmpl = chat_template::parse("{{ bos_token }}{{ messages[0].content }}{{ note }}{{ add_generation_prompt }}{{ eos_token }}\r\n");
  REQUIRE(tmpl.ok());
  CHECK(tmpl->source() == "{{ bos_token }}{{ messages[0].content }}{{ note }}{{ add_generation_prompt }}{{ eos_token }}");
  auto out = tmpl->render_chat(*messages, true, "<s>", "</s>", &*extra);
  REQUIRE(out.ok());
  CHECK(*out == "<s>HixTrue</s>");
  rapidjson::Document not_an_array;
  not_an_array.SetObject();
  CHECK(tmpl->render_chat(not_an_array, false, "", "").err().code() == errc::invalid_argument);
}

TEST_CASE("the ChatML fallback") {
  auto messages = json::parse(R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])");
  REQUIRE(messages.ok());
  auto out = chat_template::chatml().render_chat(*messages, true, "", "");
  REQUIRE(out.ok());
  CHECK(*out == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto no_prompt = chat_template::chatml().render_chat(*messages, false, "", "");
  REQUIRE(no_prompt.ok());
  CHECK(no_prompt->ends_with("Hi<|im_end|>\n"));
}

TEST_CASE("whitespace control with trim_blocks and lstrip_blocks") {
  CHECK(render("  {% if true %}\n    x\n  {% endif %}\n  {{ 1 }}\n  {#- c #}\ny") == "    x\n  1y");
  CHECK(render("a  {#- c -#}  b {# x +#}\n c") == "ab \n c");
  CHECK(render("{% if true +%}\nx{%+ if true %}y{% endif %}\n{% endif %}") == "\nxy");
  CHECK(render("{{- ' a ' -}}  \n  {{ 'b' }}") == " a b");
  CHECK(render("line\n") == "line");
  CHECK(render("a\r\nb\rc") == "a\nb\nc");
  CHECK(render("{% raw %}  {{ x }}\n{% endraw %}\n  {% raw -%}\n  a {%- endraw %}\nb") == "  {{ x }}\nab");
}

TEST_CASE("literals and printing follow Python") {
  CHECK(render("{{ none }}|{{ [1, 'a', none, true, 1.5] }}|{{ {'a': (1, 2)} }}|{{ \"it's\" }}|{{ [\"it's\", 'q\"'] }}") ==
        "None|[1, 'a', None, True, 1.5]|{'a': (1, 2)}|it's|[\"it's\", 'q\"']");
  CHECK(render(R"({{ "a\tb\n\x41\u00e9\'" }} {{ 'a' "b" }})") == "a\tb\nA\xc3\xa9' ab");
  CHECK(render("{{ '\\q\\101\\x41\\\nx' }}") == "\\qAAx");
  CHECK(render("{{ 1_000 + 0x10 + 0b11 + 0o7 }} {{ 1.5e3 }} {{ 1e3 }}") == "1026 1500.0 1000.0");
  CHECK(render("{{ 3.0 }} {{ 1.0e-5 }} {{ 123456789012345678.0 }} {{ 0.1 + 0.2 }} {{ 1/3 }} {{ 1e16 }}") ==
        "3.0 1e-05 1.2345678901234568e+17 0.30000000000000004 0.3333333333333333 1e+16");
  CHECK(render("{{ (1,) }} {{ () }} {{ True }} {{ False }} {{ None }}") == "(1,) () True False None");
}

TEST_CASE("arithmetic, comparisons and logic") {
  CHECK(render("{{ (1, 2) == [1, 2] }} {{ 2.5|round }} {{ 3|round }} {{ 10/4 }} {{ -7//2 }} {{ -7 % 3 }} {{ 2**-1 }}") ==
        "False 2.0 3 2.5 -4 2 0.5");
  CHECK(render("{{ -2**2 }} {{ not 1 == 2 }} {{ 1 if false }}| {{ 'a' ~ none ~ 1 }}") == "4 True | aNone1");
  CHECK(render("{{ 5 // 2.0 }} {{ 7 % 2.5 }} {{ 'a' * 3 }}{{ [1] * 2 }}") == "2.0 2.0 aaa[1, 1]");
  CHECK(render("{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ none == none }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}") ==
        "True True True True True False");
  CHECK(render("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 'z' }}| {{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}") ==
        "x y | True False True");
  CHECK(render("{{ 'x' if 1 > 2 else 'y' }} {{ [1] + [2] }} {{ 'a' + 'b' }}") == "y [1, 2] ab");
}

TEST_CASE("variables, undefined values and scoping") {
  CHECK(render("{{ 'a' in undefined_thing }}|{{ undefined_thing is iterable }}|{{ undefined_thing is sequence }}|{{ undefined_thing|length }}") ==
        "False|True|True|0");
  CHECK(render("[{{ missing }}]{{ missing is defined }}{{ missing is undefined }}") == "[]FalseTrue");
  CHECK(render("{{ d.x is defined }} {{ d.a }} {{ d['a'] }} {{ d.get('z', 5) }} {{ none.x }}|",
               R"({"d": {"a": 1}})") == "False 1 1 5 |");
  CHECK(render("{% for i in [1, 2] %}{% if i == 2 %}{{ y }}{% endif %}{% set y = i %}{% endfor %}[{{ y }}]") == "[]");
  CHECK(render("{% set y = 0 %}{% for i in [1, 2] %}{{ y }}{% set y = i %}{% endfor %}{{ y }}") == "000");
  CHECK(render("{% if true %}{% set z = 3 %}{% endif %}{{ z }}") == "3");
  CHECK(render("{% set a %}{% set inner = 1 %}x{% endset %}{{ inner }}|{{ a }}") == "|x");
  CHECK(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}") == "12");
  CHECK(render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "3");
  CHECK(render("{% set ns = namespace() %}{% set ns.found = 'yes' %}{{ ns.found }}") == "yes");
  CHECK(render("{% with a = 1 %}{{ a }}{% endwith %}[{{ a }}]") == "1[]");
  CHECK(render("{% generation %}  gen {% set q = 1 %}{% endgeneration %}[{{ q }}]") == "  gen []");
}

TEST_CASE("for loops") {
  CHECK(render("{% for a in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.revindex }},{% endfor %}") ==
        "-2-3,1-3-2,2--1,");
  CHECK(render("{% for x in 'ab' %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex0 }} {% endfor %}") ==
        "10TrueFalse21 21FalseTrue20 ");
  CHECK(render("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }} {% endfor %}") == "15 35 55 75 95 ");
  CHECK(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"b": 1, "a": 2}})") == "b=1;a=2;");
  CHECK(render("{% for k in d %}{{ k }}{% endfor %}", R"({"d": {"b": 1, "a": 2}})") == "ba");
  CHECK(render("{% for x in range(10) %}{% if x == 3 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}") ==
        "0124");
  CHECK(render("{% for x in [1, 2] %}{% for y in 'ab' %}{{ loop.depth }}{{ x }}{{ y }} {% endfor %}{% endfor %}") ==
        "11a 11b 12a 12b ");
  CHECK(render("{% for x in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}") == "aba");
  CHECK(render("{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }}") ==
        "[0, 1, 2] [1, 4, 7] [5, 3, 1]");
}

TEST_CASE("macros and call blocks") {
  CHECK(render("{% macro m(a, b=2) %}[{{ a }}{{ b }}{{ c }}]{% endmacro %}{{ m(1) }}{{ m(1, b=3) }}{% set c = 5 %}{{ m(0) }}") ==
        "[12][13][025]");
  CHECK(render("{% macro m(a) %}{{ caller() }}{{ a }}{% endmacro %}{% call m(1) %}body{% endcall %}") == "body1");
  CHECK(render("{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}") == "(1, 2){'k': 3}");
  CHECK(render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}") == "321");
  CHECK(render("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}") ==
        "error: 1:41: macro 'm' takes not more than 1 argument(s)");
  CHECK(render("{% filter upper %}abc{% endfilter %}") == "ABC");
}

TEST_CASE("subscripts and slices") {
  CHECK(render("{{ 'abc'[1:] }} {{ [1, 2, 3, 4][::-2] }} {{ x[-1] }} {{ x[1:-1] }} {{ x[::-1] }} {{ x[5] }}|",
               R"({"x": [1, 2, 3]})") == "bc [4, 2] 3 [2] [3, 2, 1] |");
  CHECK(render("{{ s|length }} {{ s[1] }} {{ s[::-1] }} {{ s[1:3] }}", R"({"s": "h\u00e9llo"})") ==
        "5 \xc3\xa9 oll\xc3\xa9h \xc3\xa9l");
  CHECK(render("{{ 'abc'[1:5:0] }}") == "error: 1:4: slice step cannot be zero");
  CHECK(render("{{ x.0 }}", R"({"x": ["first"]})") == "first");
}

TEST_CASE("filters") {
  CHECK(render("{{ '  a  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ [1, 2]|length }}|{{ 'abc'|count }}|{{ 'aB'|upper }}{{ 'aB'|lower }}") ==
        "a|a|2|3|ABab");
  CHECK(render("{{ 'hello world-foo(bar'|title }} {{ 'hELLO there'|capitalize }}") == "Hello World-Foo(Bar Hello there");
  CHECK(render("{{ missing|default('d') }} {{ ''|default('e', true) }} {{ 0|d(1) }}") == "d e 0");
  CHECK(render("{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a']|sort }} {{ ['b', 'A', 'a']|unique|list }} {{ {'b': 1, 'a': 2}|dictsort }}") ==
        "[1, 2, 3] ['A', 'a', 'b'] ['b', 'A'] [('a', 2), ('b', 1)]");
  CHECK(render("{{ [3, 1, 2]|sort(reverse=true) }} {{ x|sort(attribute='n')|map(attribute='n')|list }}",
               R"({"x": [{"n": 2}, {"n": 1}]})") == "[3, 2, 1] [1, 2]");
  CHECK(render("{{ '  a  b '|wordcount }} {{ 'x\ny'|indent(2, true) }} {{ [1, 2, 3, 4, 5]|batch(2)|list }}") ==
        "2   x\n  y [[1, 2], [3, 4], [5]]");
  CHECK(render("{{ x|map('string')|join(',') }} {{ x|select('odd')|list }} {{ x|reject('odd')|list }} {{ x|join }} {{ x|first }}{{ x|last }}",
               R"({"x": [1, 2, 3]})") == "1,2,3 [1, 3] [2] 123 13");
  CHECK(render("{{ m|selectattr('role', 'equalto', 'user')|map(attribute='c')|list }} {{ m|rejectattr('role', 'eq', 'user')|list|length }} {{ m|selectattr('flag')|list|length }}",
               R"({"m": [{"role": "user", "c": 1}, {"role": "bot", "c": 2, "flag": true}]})") == "[1] 1 1");
  CHECK(render("{{ 1.5|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ '3'|float }} {{ -3|abs }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }}") ==
        "1 4 0 3.0 3 2.67 3.0");
  CHECK(render("{{ d|items|list }} {{ d|list }} {{ d.keys()|list }} {{ d.values()|list }}", R"({"d": {"a": 1, "b": 2}})") ==
        "[('a', 1), ('b', 2)] ['a', 'b'] ['a', 'b'] [1, 2]");
  CHECK(render("{{ 'a-b'|replace('-', '+') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|reverse }} {{ [1, 2]|reverse|list }}") ==
        "a+b bba cba [2, 1]");
  CHECK(render("{{ '<a & \"b\">'|e }} {{ '<x>'|safe }} {{ 42|string ~ '!' }} {{ [1, 2]|sum }} {{ [3, 1]|max }}{{ [3, 1]|min }}") ==
        "&lt;a &amp; &#34;b&#34;&gt; <x> 42! 3 31");
  CHECK(render("{{ '%s-%d'|format('a', 3) }} {{ '%05.1f'|format(3.14159) }}") == "a-3 003.1");
  CHECK(render("{{ '%s' % 1 }} {{ '%s=%r' % ('a', 'b') }} {{ '%(x)s!' % {'x': 1} }} {{ '100%%' % () }}") ==
        "1 a='b' 1! 100%");
}

TEST_CASE("tojson matches Hugging Face's filter") {
  CHECK(render("{{ x|tojson }} {{ d|tojson(indent=2) }}", R"({"x": [1, 2], "d": {"a": 1, "b": 2}})") ==
        "[1, 2] {\n  \"a\": 1,\n  \"b\": 2\n}");
  CHECK(render("{{ {'k': [1, {'z': []}], 'e': {}}|tojson(indent=2) }}") ==
        "{\n  \"k\": [\n    1,\n    {\n      \"z\": []\n    }\n  ],\n  \"e\": {}\n}");
  CHECK(render("{{ s|tojson }} {{ s|tojson(ensure_ascii=true) }}", R"({"s": "\u00e9\"\n\u0001"})") ==
        "\"\xc3\xa9\\\"\\n\\u0001\" \"\\u00e9\\\"\\n\\u0001\"");
  CHECK(render("{{ {'b': 1, 'a': none, 'c': 1.0, 'd': true}|tojson(sort_keys=true) }}") ==
        "{\"a\": null, \"b\": 1, \"c\": 1.0, \"d\": true}");
  CHECK(render("{{ missing|tojson }}") == "error: 1:4: Object of type Undefined is not JSON serializable");
}

TEST_CASE("tests") {
  CHECK(render("{{ x is sequence }} {{ d is sequence }} {{ 'a' is sequence }} {{ true is number }} {{ true is integer }} {{ 1.0 is integer }}",
               R"({"x": [], "d": {}})") == "True True True True False False");
  CHECK(render("{{ 1 is odd }}{{ 2 is even }}{{ 9 is divisibleby 3 }}{{ 'a' is string }}{{ {} is mapping }}{{ none is none }}") ==
        "TrueTrueTrueTrueTrueTrue");
  CHECK(render("{{ 3 is gt 2 }}{{ 3 is lt(2) }}{{ 2 is in [1, 2] }}{{ 'ab' is lower }}{{ true is true }}{{ 0 is false }}") ==
        "TrueFalseTrueTrueTrueFalse");
  CHECK(render("{% macro m() %}{% endmacro %}{{ m is callable }}{{ range is callable }}{{ 1.5 is float }}{{ false is boolean }}") ==
        "TrueTrueTrueTrue");
}

TEST_CASE("string and dict methods") {
  CHECK(render("{{ ' a '.strip() }}|{{ 'xay'.lstrip('x') }}|{{ ' a '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a b '.split() }}|{{ 'abc'.split('b', 1) }}") ==
        "a|ay| a|['a', 'b', '', 'c']|['a', 'b']|['a', 'c']");
  CHECK(render("{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'aB'.upper() }}{{ 'aB'.lower() }}{{ \"they're bill\".title() }}") ==
        "TrueTrueABabThey'Re Bill");
  CHECK(render("{{ 'a-b-c'.replace('-', '') }} {{ 'abcb'.find('b') }} {{ 'abcb'.rfind('b') }} {{ 'abcb'.count('b') }} {{ ', '.join(['x', 'y']) }}") ==
        "abc 1 3 2 x, y");
  CHECK(render("{{ '{} and {}'.format(1, 'b') }} {{ '{name}!'.format(name='x') }} {{ 'a/b/c'.rsplit('/', 1) }}") ==
        "1 and b x! ['a/b', 'c']");
  CHECK(render("{{ 'x</think>y'.split('</think>')[-1] }} {{ 'ab'.removeprefix('a') }} {{ 'a\\nb'.splitlines() }}") ==
        "y b ['a', 'b']");
  CHECK(render("{{ d.get('a') }} {{ d.get('z') }} {{ d.items()|list }} {{ d['keys'] is defined }}", R"({"d": {"a": 1}})") ==
        "1 None [('a', 1)] True");
}

TEST_CASE("global functions") {
  CHECK(render("{{ raise_exception('Roles must alternate') }}") == "error: Roles must alternate");
  CHECK(error_code("{{ raise_exception('no') }}") == errc::invalid_argument);
  CHECK(render("{{ strftime_now('%d %b %Y') }} {{ strftime_now('%B %d, %Y') }}") == "26 Jul 2024 July 26, 2024");
  CHECK(render("{{ dict(a=1) }} {{ namespace(a=1).a }}") == "{'a': 1} 1");
  CHECK(render("{{ range(100001)|length }}") == "error: 1:4: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
}

TEST_CASE("runtime errors name the position") {
  CHECK(render("{{ undefined_thing.foo }}") == "error: 1:4: 'undefined_thing' is undefined");
  CHECK(render("line\n  {{ 1 + 'a' }}") == "error: 2:6: unsupported operand type(s) for +: 'int' and 'str'");
  CHECK(render("{{ 'abc' < 1 }}") == "error: 1:4: '<' not supported between instances of 'str' and 'int'");
  CHECK(render("{{ 7 // 0 }}") == "error: 1:4: integer division or modulo by zero");
  CHECK(render("{{ 'text'() }}") == "error: 1:4: 'str' object is not callable");
  CHECK(render("{% for a, b in [1] %}{% endfor %}") == "error: 1:1: cannot unpack non-iterable int object");
  CHECK(render("{{ x.append(3) }}", R"({"x": []})") ==
        "error: 1:4: access to attribute 'append' of 'list' object is unsafe.");
  CHECK(error_code("{{ missing + 1 }}") == errc::invalid_argument);
}

TEST_CASE("syntax errors and unsupported constructs name the position") {
  CHECK(render("{% if x %}") == "error: 1:4: unexpected end of template: the 'if' tag needs {% elif %} or {% else %} or {% endif %}");
  CHECK(render("{{ 1 + }}") == "error: 1:8: expected an expression, got '}}'");
  CHECK(render("a\n{% endfor %}") == "error: 2:4: unexpected 'endfor' tag: no open block takes it here");
  CHECK(render("{% frobnicate %}") == "error: 1:4: unknown tag 'frobnicate'");
  CHECK(render("{{ x|nosuchfilter }}") == "error: 1:6: no filter named 'nosuchfilter'");
  CHECK(render("{# open") == "error: 1:1: missing end of comment tag");
  CHECK(render("{{ 'open }}") == "error: 1:4: unterminated string literal");
  CHECK(render("{% break %}") == "error: 1:4: 'break' outside of a loop");

  CHECK(render("{% include 'x.jinja' %}") == "error: 1:4: the 'include' tag is not supported");
  CHECK(error_code("{% include 'x.jinja' %}") == errc::unsupported);
  CHECK(render("{% extends 'base' %}") == "error: 1:4: the 'extends' tag is not supported");
  CHECK(render("line\n{{ x|groupby('a') }}") == "error: 2:6: the filter 'groupby' is not supported");
  CHECK(render("{{ x is escaped }}") == "error: 1:9: the test 'escaped' is not supported");
  CHECK(render("{% for x in y recursive %}{% endfor %}") == "error: 1:15: recursive loops are not supported");
  CHECK(render("{{ f(*args) }}") == "error: 1:6: argument unpacking (*args, **kwargs) is not supported");
  CHECK(render("{{ 'a'.zfill(3) }}") == "error: 1:4: the str method 'zfill' is not supported");
  CHECK(error_code("{{ 'a'.zfill(3) }}") == errc::unsupported);
}

TEST_CASE("render rejects a context that is not an object") {
  auto tmpl = chat_template::parse("x");
  REQUIRE(tmpl.ok());
  rapidjson::Document array;
  array.SetArray();
  CHECK(tmpl->render(array).err().code() == errc::invalid_argument);
}

TEST_CASE("a typical chat renders well under a millisecond") {
  auto tmpl = chat_template::parse(read_file(std::filesystem::path(CHATAI_SHARED_DIR) / "testdata" / "templates" /
                                             "meta-llama-Llama-3.1-8B-Instruct.jinja"));
  REQUIRE(tmpl.ok());
  std::string messages = "[";
  for (int i = 0; i < 10; ++i)
    messages += std::string(i ? "," : "") + R"({"role": ")" + (i % 2 ? "assistant" : "user") +
                R"(", "content": "Message number )" + std::to_string(i) + R"( with a few words of text."})";
  messages += "]";
  auto doc = json::parse(messages);
  REQUIRE(doc.ok());
  const int runs = 200;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < runs; ++i) {
    auto out = tmpl->render_chat(*doc, true, "<|begin_of_text|>", "<|eot_id|>", nullptr, fixed_clock());
    REQUIRE(out.ok());
  }
  const auto per_render = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start) / runs;
  MESSAGE("Llama 3.1, 10 messages: ", per_render.count(), " us per render");
  CHECK(per_render.count() < 1000.0);
}

TEST_CASE("hostile nesting fails instead of exhausting the stack") {
  CHECK(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}") ==
        "error: 1:70: the template nests blocks or expressions more than 200 levels deep");
  std::string chain = "{{ 1";
  for (int i = 0; i < 20000; ++i) chain += " + 1";
  CHECK(render(chain + " }}") == "error: 1:4: the expression is nested too deeply");
  std::string blocks;
  for (int i = 0; i < 5000; ++i) blocks += "{% if true %}";
  CHECK(render(blocks).starts_with("error: 1:"));
  CHECK(render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").ends_with("maximum macro recursion depth exceeded"));
  CHECK(render("{% set ns = namespace() %}{% set ns.self = ns %}{{ ns.self is defined }}") == "True");
}

TEST_CASE("runaway templates hit the size and work limits") {
  CHECK(error_code("{{ 'a' * 100000000 }}") == errc::resource_exhausted);
  CHECK(error_code("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}") ==
        errc::resource_exhausted);
  CHECK(render("{{ 'x'|center(1000000000) }}") == "error: 1:4: the template builds a value larger than 64 MiB");
  CHECK(render("{{ '%2000000000s' % 'x' }}") == "error: 1:4: the template builds a value larger than 64 MiB");
  CHECK(render("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}") ==
        "error: 1:29: the template runs more than 10000000 statements and loop iterations");
}
