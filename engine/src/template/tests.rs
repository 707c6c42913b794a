//! Unit tests of `template`: rendering, types, scope narrowing, and every limit.

use serde_json::json;

use super::*;

fn scope() -> Value {
    json!({
        "trigger": {"body": {"email": "ada@example.com", "n": 3, "contacts": [{"email": "a@b.c"}]}},
        "nodes": {
            "score": {"status": "succeeded", "output": {"tier": "hot", "total": 87.5}, "error": null},
            "skipped": {"status": "skipped", "output": null, "error": null}
        },
        "secrets": {"TOKEN": "s3cret"},
        "run": {"id": "r1"},
        "workflow": {"id": "wf"},
    })
}

fn render(value: Value) -> Result<Value, TemplateError> {
    Templates::new().render_value(&value, &scope())
}

#[test]
fn node_references_are_found_statically() {
    let templates = Templates::new();
    let text =
        "{{ nodes.a.output.x }} and {% if nodes.b.status == 'ok' %}{{ nodes.a.error }}{% endif %}";
    assert_eq!(templates.node_references(text), ["a", "b"]);
    assert_eq!(templates.node_references("{{ nodes.c.output }}"), ["c"]);
    assert_eq!(
        templates.expression_node_references("nodes.d.output.tier == 'hot'"),
        ["d"]
    );
    assert!(
        templates
            .node_references("{{ trigger.body }} plain")
            .is_empty()
    );
    assert!(templates.node_references("no templates").is_empty());
    assert!(templates.node_references("{{ broken").is_empty());
}

#[test]
fn booleans_and_null_in_text_are_spelled_as_json() {
    let rendered = render(json!(
        "vip={{ trigger.body.n > 2 }} none={{ nodes.skipped.output }}"
    ));
    assert_eq!(rendered.expect("renders"), json!("vip=true none=null"));
    let rendered = render(json!(
        "n={{ trigger.body.n }} tier={{ nodes.score.output.tier }}"
    ));
    assert_eq!(rendered.expect("renders"), json!("n=3 tier=hot"));
}

#[test]
fn a_single_expression_keeps_its_json_type() {
    let templates = Templates::new();
    let cases = [
        (
            "{{ nodes.score.output }}",
            json!({"tier": "hot", "total": 87.5}),
        ),
        ("{{ trigger.body.contacts }}", json!([{"email": "a@b.c"}])),
        ("{{ trigger.body.n }}", json!(3)),
        ("{{ nodes.score.output.total }}", json!(87.5)),
        ("{{ trigger.body.n > 2 }}", json!(true)),
        ("{{ nodes.skipped.output }}", Value::Null),
        ("  {{ trigger.body.n + 1 }}\n", json!(4)),
        ("{{- trigger.body.n -}}", json!(3)),
    ];
    for (text, expected) in cases {
        let rendered = templates.render_value(&json!(text), &scope()).unwrap();
        assert_eq!(rendered, expected, "{text}");
    }
}

#[test]
fn any_other_template_renders_to_a_string() {
    let cases = [
        (
            "Hot lead {{ trigger.body.email }}",
            "Hot lead ada@example.com",
        ),
        ("{{ trigger.body.n }}{{ trigger.body.n }}", "33"),
        (
            "{% if trigger.body.n > 2 %}big{% else %}small{% endif %}",
            "big",
        ),
        ("{{ run.id }}.html <b>", "r1.html <b>"),
        ("line {{ workflow.id }}\n", "line wf\n"),
    ];
    for (text, expected) in cases {
        assert_eq!(render(json!(text)).unwrap(), json!(expected), "{text}");
    }
}

#[test]
fn walks_lists_and_maps_but_not_keys() {
    let value = json!({
        "{{ run.id }}": ["{{ trigger.body.n }}", "x", 1, null, true],
        "nested": {"email": "{{ trigger.body.email }}"},
    });
    let expected = json!({
        "{{ run.id }}": [3, "x", 1, null, true],
        "nested": {"email": "ada@example.com"},
    });
    assert_eq!(render(value).unwrap(), expected);
}

#[test]
fn plain_strings_are_returned_unchanged() {
    let value = json!({"a": "no templates here", "b": "a } and { and #}", "c": 1.5});
    assert_eq!(render(value.clone()).unwrap(), value);
    // The fast path does not even look at the scope.
    let templates = Templates::new();
    assert_eq!(templates.render_value(&value, &Value::Null).unwrap(), value);
}

#[test]
fn undefined_names_and_attributes_are_errors_naming_the_template() {
    let cases = [
        ("{{ nope }}", "undefined value: `nope` is undefined"),
        ("{{ nope ~ 'x' }}", "undefined value: `nope` is undefined"),
        (
            "{{ 'x' ~ trigger.body.missing }}",
            "undefined value: `trigger.body.missing` is undefined",
        ),
        (
            "{{ trigger.body.missing * 2 }}",
            "undefined value: `trigger.body.missing` is undefined",
        ),
        (
            "{{ trigger.body.missing }}",
            "undefined value: `trigger.body.missing` is undefined",
        ),
        (
            "Hi {{ trigger.body.missing }}",
            "undefined value: `trigger.body.missing` is undefined",
        ),
        (
            "{{ nodes.skipped.output.tier }}",
            "undefined value: `nodes.skipped.output.tier` is undefined",
        ),
    ];
    for (text, message) in cases {
        let error = render(json!({"deep": [text]})).unwrap_err();
        assert_eq!(error.expression, text);
        assert_eq!(error.message, message, "{text}");
    }
}

#[test]
fn conditions_use_truthiness() {
    let templates = Templates::new();
    let cases = [
        ("nodes.score.output.tier == \"hot\"", true),
        ("nodes.score.output.tier == 'cold'", false),
        ("trigger.body.contacts", true),
        ("nodes.skipped.output", false),
        ("nodes.skipped.status == 'skipped' and trigger.body.n", true),
        ("trigger.body.missing is defined", false),
        ("0", false),
        ("''", false),
    ];
    for (expr, expected) in cases {
        assert_eq!(
            templates
                .eval_condition(expr, &RunScope::plain(scope()))
                .unwrap(),
            expected,
            "{expr}"
        );
    }
    let error = templates.eval_condition(
        "nodes.skipped.output.tier == 'hot'",
        &RunScope::plain(scope()),
    );
    assert_eq!(
        error.unwrap_err().to_string(),
        "in `nodes.skipped.output.tier == 'hot'`: undefined value: `nodes.skipped.output.tier` is undefined"
    );
    let error = templates
        .eval_condition("missing", &RunScope::plain(scope()))
        .unwrap_err();
    assert_eq!(error.message, "undefined value: `missing` is undefined");
}

#[test]
fn syntax_is_checked_without_a_scope() {
    let templates = Templates::new();
    assert!(templates.check_template("plain {text}").is_ok());
    assert!(templates.check_template("{{ nodes.a.output }}").is_ok());
    assert!(
        templates
            .check_template("Hi {{ x }} {% if y %}!{% endif %}")
            .is_ok()
    );
    let error = templates.check_template("Hi {{ x").unwrap_err();
    assert_eq!(error.expression, "Hi {{ x");
    assert_eq!(
        error.message,
        "syntax error: unexpected end of input, expected end of variable block"
    );
    let error = templates.check_template("{{ 1 + }}").unwrap_err();
    assert_eq!(
        error.message,
        "syntax error: unexpected end of input, expected expression"
    );
    assert!(templates.check_template("{% include 'other' %}").is_err());
    assert!(templates.check_expression("a.b == 'x' and c").is_ok());
    let error = templates.check_expression("a ==").unwrap_err();
    assert_eq!(
        error.to_string(),
        "in `a ==`: syntax error: unexpected end of input, expected expression"
    );
    assert!(templates.check_expression("a }} {{ b").is_err());
}

#[test]
fn block_delimiters_inside_expression_strings_are_fine() {
    let templates = Templates::new();
    assert!(
        templates
            .eval_condition("x == '%}'", &RunScope::plain(json!({"x": "%}"})))
            .unwrap()
    );
    // Load-time checks reject what is not a single expression, so the wrapper that
    // evaluation uses never sees it.
    assert!(templates.check_expression("1) %}{% set x = (1").is_err());
}

/// The narrowed scope must render exactly like the whole one.
#[test]
fn templates_see_the_same_values_as_with_the_whole_scope() {
    let templates = Templates::new();
    let whole = minijinja::Value::from(Serde(scope()));
    let cases = [
        "{% for k, v in nodes | items %}{{ k }}={{ v.status }};{% endfor %}",
        "{{ nodes['score'].output.tier }} {{ nodes | length }} {{ nodes.score | length }}",
        "{% set n = nodes.score %}{{ n.output.total }}",
        "{% with x = trigger.body %}{{ x.email }}{% endwith %}",
        "{{ nodes.missing is defined }} {{ nodes.score.output.missing is defined }}",
        "{{ nodes.missing.output is defined }}",
        "{{ trigger.body.contacts[0].email }} {{ trigger.body.contacts | map(attribute='email') | join(',') }}",
        "{% for c in trigger.body.contacts %}{{ c.email }}{{ loop.index }}{% endfor %}",
        "{{ range(3) | list }} {{ workflow.id ~ '/' ~ run.id }}",
        "{{ nodes.score.output.items() | list }} {{ nodes.score.output.get('tier') }}",
        "{{ nodes.score.output.keys() | list }}",
        "{% if nodes.score.output.tier == 'hot' %}{{ secrets.TOKEN }}{% endif %}",
        "{{ nodes.skipped.output.tier }}",
        "{{ trigger.body.n is even }} {{ nodes.score.output.total | round }}",
        "{{ trigger }}",
        "{{ nodes.score.output.tier.upper() }}",
    ];
    let text = "{{ nodes.score.output.tier }}";
    let template = templates.template(text, text).unwrap();
    let context = templates.context(text, &template, &scope());
    let nodes = context.get_attr("nodes").unwrap();
    assert!(context.get_attr("trigger").unwrap().is_undefined());
    assert!(nodes.get_attr("skipped").unwrap().is_undefined());
    assert_eq!(
        nodes
            .get_attr("score")
            .unwrap()
            .get_attr("output")
            .unwrap()
            .len(),
        Some(2)
    );
    for text in cases {
        let template = templates.template(text, text).unwrap();
        let narrowed = template.render(templates.context(text, &template, &scope()));
        let expected = template.render(whole.clone());
        match (narrowed, expected) {
            (Ok(narrowed), Ok(expected)) => assert_eq!(narrowed, expected, "{text}"),
            (Err(narrowed), Err(expected)) => {
                assert_eq!(narrowed.to_string(), expected.to_string(), "{text}")
            }
            (narrowed, expected) => panic!("{text}: {narrowed:?} but {expected:?}"),
        }
    }
}

#[test]
fn compiled_templates_are_reused_across_clones() {
    let templates = Templates::new();
    let clone = templates.clone();
    let value = json!("{{ trigger.body.n * 2 }} and {{ run.id }}");
    assert_eq!(
        templates.render_value(&value, &scope()).unwrap(),
        json!("6 and r1")
    );
    assert_eq!(
        clone.render_value(&value, &scope()).unwrap(),
        json!("6 and r1")
    );
    assert!(Arc::ptr_eq(&templates.shared, &clone.shared));
}
fn small_limits() -> Limits {
    Limits {
        fuel: 10_000,
        max_output_bytes: 1_000,
        ..Limits::default()
    }
}

fn render_with(limits: Limits, text: &str) -> Result<Value, TemplateError> {
    Templates::with_limits(limits).render_value(&json!(text), &scope())
}

#[test]
fn slices_of_scope_values_work_like_slices_of_literals() {
    let scope = json!({"trigger": {"body": {"name": "abcdef", "list": [1, 2, 3]}},
        "nodes": {"a": {"output": {"items": [4, 5, 6]}}}});
    let templates = Templates::new();
    let cases = [
        ("{{ 'abc'[1:] }}", json!("bc")),
        ("{{ trigger.body.name[1:] }}", json!("bcdef")),
        ("{{ trigger.body.name[:-2] }}", json!("abcd")),
        ("name={{ trigger.body.name[::2] }}", json!("name=ace")),
        ("{{ trigger.body.list[1:] }}", json!([2, 3])),
        ("{{ nodes.a.output.items[-1:] }}", json!([6])),
    ];
    for (text, expected) in cases {
        let rendered = templates.render_value(&json!(text), &scope);
        assert_eq!(rendered.unwrap(), expected, "{text}");
    }
    assert!(
        templates
            .eval_condition(
                "trigger.body.name[:1] == 'a'",
                &RunScope::plain(scope.clone())
            )
            .unwrap()
    );
    assert_eq!(
        templates.node_references("{{ nodes.a.output.items[1:] }}"),
        ["a"]
    );
}

#[test]
fn running_out_of_fuel_is_an_error_that_names_the_budget() {
    let text = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}";
    let error = render_with(small_limits(), text).unwrap_err();
    assert_eq!(
        error.message,
        "the template exhausted its budget of 10000 instructions (template fuel)"
    );
    let tight = Limits {
        fuel: 10,
        ..Limits::default()
    };
    let sum = vec!["trigger.body.n"; 20].join(" + ");
    let error = Templates::with_limits(tight)
        .eval_condition(&sum, &RunScope::plain(scope()))
        .unwrap_err();
    assert!(
        error.message.contains("budget of 10 instructions"),
        "{error}"
    );
    // The default budget leaves room for ordinary loops.
    let text = "{% for c in range(1000) %}{{ c }}{% endfor %}";
    assert!(render_with(Limits::default(), text).is_ok());
}

#[test]
fn output_over_the_limit_is_an_error_for_text_and_values() {
    let too_large = "the output is larger than the template output limit of 1000 bytes";
    for text in [
        "{% for c in range(100) %}0123456789-{% endfor %}",
        "{% for c in range(100) %}{{ trigger.body.email }}{% endfor %}",
        "{{ range(1000) | list }}",
        "x{{ range(1000) | list }}",
    ] {
        let error = render_with(small_limits(), text).unwrap_err();
        assert_eq!(error.message, too_large, "{text}");
    }
    assert!(render_with(small_limits(), "{{ '-' * 1000 }}").is_ok());
}

/// `*` and `~` are checked before they build anything: one instruction could otherwise
/// allocate 100 MB (minijinja's own cap on `*`) or double a string.
#[test]
fn repetition_and_concatenation_over_the_limit_are_refused() {
    let cases = [
        ("{{ '-' * 5000 }}", "`*`"),
        ("{{ trigger.body.email * 100 }}", "`*`"),
        ("x{{ 100 * trigger.body.email }}", "`*`"),
        ("{{ [trigger.body.email] * 100 }}", "`*`"),
        ("{{ trigger.body.n * 100000000 }}", ""),
        ("{% set x = '-' * 600 %}{{ x ~ x }}", "`~`"),
        (
            "{% set x = '-' * 300 %}{% set x = x ~ x %}{{ (x ~ x) | length }}",
            "`~`",
        ),
        ("{% if ('-' * 600) ~ ('-' * 600) %}{% endif %}", "`~`"),
    ];
    for (text, operator) in cases {
        match render_with(small_limits(), text) {
            Err(error) if !operator.is_empty() => assert_eq!(
                error.message,
                format!(
                    "invalid operation: {operator} would produce more than the template output limit of 1000 bytes"
                ),
                "{text}"
            ),
            Ok(number) if operator.is_empty() => assert_eq!(number, json!(300000000)),
            other => panic!("{text}: {other:?}"),
        }
    }
    let error = Templates::with_limits(small_limits())
        .eval_condition("trigger.body.email * 1000 == ''", &RunScope::plain(scope()))
        .unwrap_err();
    assert!(error.message.contains("`*` would produce more"), "{error}");
}

#[test]
fn builtins_that_an_argument_makes_huge_are_refused() {
    let cases = [
        (
            "{{ 'a' | indent(18446744073709551615) }}",
            "`indent` would produce more",
        ),
        (
            "{{ 'a\nb' | indent(width=18446744073709551615) }}",
            "`indent` would produce more",
        ),
        ("{{ 'a\nb' | indent(2000) }}", "`indent` would produce more"),
        (
            "{{ '%99999999999s' | format('a') }}",
            "`format` width 99999999999",
        ),
        ("{{ '%.5000f' | format(1.5) }}", "`format` width 5000"),
        (
            "{{ '%*s' | format(5, 'a') }}",
            "`format` does not accept `*`",
        ),
        ("{{ range(400) | join(',') }}", "`join` would produce more"),
        (
            "{{ ('a' * 500) | replace('', 'bcd') }}",
            "`replace` would produce more",
        ),
        (
            "{{ ('ab' * 400) | replace('a', 'xyz') }}",
            "`replace` would produce more",
        ),
        (
            "{{ range(400) | list | string }}",
            "`string` would produce more",
        ),
        (
            "{{ range(400) | list | pprint }}",
            "`pprint` would produce more",
        ),
        (
            "{{ [1] | batch(18446744073709551615, 0) }}",
            "`batch` count 18446744073709551615",
        ),
        (
            "{{ [1] | slice(1000000000000) }}",
            "`slice` count 1000000000000",
        ),
        (
            "{% set ns = namespace(x='a') %}{{ ns.x }}",
            "namespace is unknown",
        ),
    ];
    for (text, message) in cases {
        let error = render_with(small_limits(), text).unwrap_err();
        assert!(error.message.contains(message), "{text}: {}", error.message);
    }
    // Ordinary uses still work.
    let cases = [
        ("{{ 'a\nb' | indent(2) }}", "a\n  b"),
        (
            "{{ '%5s|%-3d|%.2f' | format('x', 7, 1.234) }}",
            "    x|7  |1.23",
        ),
        ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
        ("{{ 'a-b' | replace('-', '+') }}", "a+b"),
        ("{{ [1, 2, 3] | batch(2, 0) | list }}", "[[1, 2], [3, 0]]"),
        ("{{ [1, 2, 3] | slice(2) | list }}", "[[1, 2], [3]]"),
        ("{{ 12 | string }}", "12"),
    ];
    for (text, expected) in cases {
        let rendered = render_with(small_limits(), &format!("={text}")).unwrap();
        assert_eq!(rendered, json!(format!("={expected}")), "{text}");
    }
}

#[test]
fn constants_folded_at_load_are_bounded() {
    let templates = Templates::new();
    let text = "{{ ('a' * 100000000) ~ ('a' * 100000000) ~ ('a' * 100000000) }}";
    let error = templates.check_template(text).unwrap_err();
    assert_eq!(
        error.message,
        "invalid operation: a constant expression would build 100000000 bytes when compiled, \
         more than the limit of 65536 bytes"
    );
    let error = templates.check_template(&format!("x {text}")).unwrap_err();
    assert!(error.message.contains("constant expression"), "{error}");
    let error = templates
        .check_expression("('a' * 100000000) == x")
        .unwrap_err();
    assert!(error.message.contains("constant expression"), "{error}");
    // Rendering goes through the same check (a revision re-read from the store).
    let error = render(json!(format!("y {text}"))).unwrap_err();
    assert!(error.message.contains("constant expression"), "{error}");
    let error = templates
        .eval_condition("'a' * 100000000", &RunScope::plain(scope()))
        .unwrap_err();
    assert!(error.message.contains("constant expression"), "{error}");
}
/// The rewritten `*` and `~` give what minijinja's own operators give, errors included.
#[test]
fn checked_operators_render_like_minijinja() {
    let mut plain = Environment::new();
    plain.set_undefined_behavior(UndefinedBehavior::Strict);
    plain.set_formatter(json_spelling);
    let templates = Templates::new();
    let whole = minijinja::Value::from(Serde(scope()));
    let cases = [
        "{{ 'a' ~ 1 ~ none ~ true ~ 1.5 }}",
        "{{ 2 * 3 }} {{ 2.5 * 2 }} {{ 'ab' * 2 }} {{ 2 * 'ab' }} {{ [1] * 3 }} {{ (1, 2) * 2 }}",
        "{{ (trigger.body.n * 2) ~ '/' ~ nodes.score.output.tier }}",
        "{% for c in trigger.body.contacts %}{{ loop.index ~ ':' ~ c.email }}{% endfor %}",
        "{{ trigger.body.email | upper ~ '!' }} {{ 'x' ~ trigger.body.n is even }}",
        "{% set s = 'ab' ~ 'cd' %}{{ s * 2 }} {{ -trigger.body.n * 2 }} {{ trigger.body.n * -1 }}",
        "{{ 10 // 3 * 2 }} {{ 2 ** 3 * 2 }} {{ 'a' if trigger.body.n > 2 else 'b' ~ 'c' }}",
        "{{ [1, 2] ~ {'a': 1} }} {{ range(3) | list * 2 }} {{ nodes.score.output.total * 2 }}",
        "{{ 9223372036854775807 * 9223372036854775807 * 100000 }}",
        "{{ 'a' * 'b' }}",
        "{{ 'a' * 1.5 }}",
        "{{ {'a': 1} * 2 }}",
        "{{ none * 2 }}",
    ];
    for text in cases {
        let ours = templates.template(text, text).and_then(|template| {
            template
                .render(whole.clone())
                .map_err(|error| template_error(text, &error))
        });
        let theirs = plain.render_str(text, whole.clone());
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{text}"),
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!("{text}: {ours:?} but minijinja gives {theirs:?}"),
        }
    }
}
/// Arguments at the edges of their types give errors or values, never a panic.
#[test]
fn extreme_arguments_do_not_panic() {
    let cases = [
        "{{ 'a' | indent(18446744073709551615, true, true) }}",
        "{{ 1.5 | round(2147483647) }} {{ 1.5 | round(-2147483648) }}",
        "{{ 'abc'[9223372036854775807:] }} {{ 'abc'[::-9223372036854775807] }}",
        "{{ [1][-9223372036854775807] }} {{ 'abc'[-9223372036854775807:9223372036854775807] }}",
        "{{ range(-9223372036854775807, 9223372036854775807, 9223372036854775807) | list }}",
        "{{ -9223372036854775807 // -1 }} {{ 1 / 0 }} {{ 5 % 0 }} {{ 5 // 0 }}",
        "{{ '%c' | format(1114112) }}",
        "{{ '%c' | format(-1) }}",
        "{{ '%.2147483647f' | format(1.5) }}",
        "{{ (2 ** 62) * (2 ** 62) * (2 ** 62) }} {{ 10 ** 1000 }} {{ 0 ** -1 }}",
        "{{ 1e308 * 10 }} {{ (1e308 * 10) | int }}",
        "{{ ('1e400' | float) | int }}",
        "{{ [1, 2] | slice(3, 0) }} {{ [] | max }} {{ [1, 2, 3] | batch(0) }}",
        "{{ 'x' | replace('', '') }} {{ 'a' * 18446744073709551615 }}",
        "{{ [1] * 18446744073709551615 }} {{ range(18446744073709551615) }}",
        "{{ 'abc' | truncate(18446744073709551615) }}",
        "{{ [3, 1] | sort(attribute='x') }} {{ {'a': 1} | dictsort(by='x') }}",
    ];
    let templates = Templates::new();
    // One expression per render, so an early error does not hide a later panic.
    for text in cases.iter().flat_map(|case| case.split(" {{")) {
        let text = if text.starts_with("{{") {
            text.to_owned()
        } else {
            format!("{{{{{text}")
        };
        // An error is fine; a panic fails the test.
        let _ = templates.render_value(&json!(text), &scope());
    }
}

/// A `foreach` item renders exactly as it would in a copy of the scope with `item` and `index`
/// set, which is what the engine did before items were laid over the scope.
#[test]
fn items_render_like_a_copy_of_the_scope_with_item_and_index() {
    let templates = Templates::new();
    let scope = scope();
    let run_scope = RunScope::plain(scope.clone());
    let each = templates.item_scope(&run_scope);
    let cases = [
        "{{ item }}",
        "{{ item.email }} #{{ index }}",
        "{{ trigger.body.email }}/{{ item.n * index }}",
        "{{ index + 1 }}",
        "{% for k, v in item | items %}{{ k }}={{ v }};{% endfor %}",
        "{{ nodes.score.output.tier }}-{{ item.email | upper }}",
        "{{ item is defined }} {{ index is defined }} {{ missing is defined }}",
        "{{ trigger }}",
        "{{ trigger.body.contacts | map(attribute='email') | join(',') }} {{ item['n'] }}",
        "{{ range(index) | list }} {{ run.id }}",
    ];
    let items = [json!({"email": "a@x.io", "n": 2}), json!(7), json!(null)];
    for (index, item) in items.iter().enumerate() {
        let mut copy = scope.clone();
        copy["item"] = item.clone();
        copy["index"] = json!(index);
        for text in cases {
            let template = json!({ "at": [text] });
            let laid = each.render_value(&template, item, index);
            let copied = templates.render_value(&template, &copy);
            match (laid, copied) {
                (Ok(laid), Ok(copied)) => assert_eq!(laid, copied, "{text} of {item}"),
                (Err(laid), Err(copied)) => {
                    assert_eq!(laid.to_string(), copied.to_string(), "{text} of {item}")
                }
                (laid, copied) => panic!("{text} of {item}: {laid:?} but {copied:?}"),
            }
        }
    }
}

/// Items do not see the names of the items before them, nor leave theirs in the scope.
#[test]
fn an_item_sees_only_its_own_item_and_index() {
    let templates = Templates::new();
    let scope = scope();
    let run_scope = RunScope::plain(scope.clone());
    let each = templates.item_scope(&run_scope);
    let text = json!("{{ index }}:{{ item }}");
    assert_eq!(
        each.render_value(&text, &json!("a"), 0).unwrap(),
        json!("0:a")
    );
    assert_eq!(
        each.render_value(&text, &json!("b"), 1).unwrap(),
        json!("1:b")
    );
    let outside = templates.render_value(&json!("{{ item }}"), &scope);
    assert!(outside.is_err(), "{outside:?}");
}

#[test]
fn a_plain_path_names_its_value_in_place_and_anything_else_renders() {
    let scope = json!({ "trigger": { "body": { "leads": [{ "id": 1 }, { "id": 2 }] } } });
    let run = RunScope::plain(scope.clone());
    let leads = &run.value["trigger"]["body"]["leads"];
    let named = |text: &str| run.named_value(&json!(text));
    for text in [
        "{{ trigger.body.leads }}",
        "{{trigger.body.leads}}",
        "{{- trigger.body.leads -}}",
    ] {
        let found = named(text).expect("a plain path");
        assert!(
            matches!(found, Cow::Borrowed(found) if std::ptr::eq(found, leads)),
            "read in place: {text}"
        );
        assert_eq!(
            render_value_in(text, &scope),
            *found,
            "as rendering gives: {text}"
        );
    }
    for text in [
        "{{ trigger.body.leads | list }}",
        "{{ trigger.body['leads'] }}",
        "{{ trigger.body.leads[0] }}",
        "{{ trigger.body.missing }}",
        "trigger.body.leads",
        "{{ trigger.body.leads }} and more",
    ] {
        assert!(named(text).is_none(), "rendered, not named: {text}");
    }
    assert!(
        run.named_value(&json!(["{{ trigger.body.leads }}"]))
            .is_none()
    );
}

fn render_value_in(text: &str, scope: &Value) -> Value {
    Templates::new()
        .render_value(&json!(text), scope)
        .expect("renders")
}

/// Outputs kept as text (a run's scope) render exactly as the same outputs in the scope would,
/// whichever way a template reaches them.
#[test]
fn outputs_kept_as_text_render_like_outputs_in_the_scope() {
    let templates = Templates::new();
    let list = json!([{ "a": 1, "tier": "hot" }, { "a": 2 }, "three"]);
    let object = json!({ "body": { "x": 1, "tags": ["t", "u"] }, "status": 200 });
    let inline = json!({
        "trigger": { "body": { "name": "n" } },
        "nodes": {
            "list": { "status": "succeeded", "error": null, "output": list },
            "obj": { "status": "succeeded", "error": null, "output": object },
            "failed": { "status": "failed", "error": { "kind": "node" }, "output": null },
        },
    });
    let mut kept = RunScope::plain(inline.clone());
    for (id, output) in [("list", &list), ("obj", &object)] {
        if let Some(view) = kept.value["nodes"][id].as_object_mut() {
            view.remove("output");
        }
        kept.outputs.insert(id.to_owned(), Json::from(output));
    }
    let inline_run = RunScope::plain(inline.clone());
    let texts = [
        "{{ nodes.list.output | length }}",
        "{{ nodes.list.output }}",
        "{{ nodes.list.output[0].tier }}/{{ nodes.list.output[-1] }}",
        "{% for x in nodes.list.output %}{{ loop.index }}{{ x }}{% endfor %}",
        "{{ nodes.list.output | reverse | list }}",
        "{{ nodes.list.output[1:] }}",
        "{{ nodes.list.output | map(attribute='a') | list }}",
        "{{ nodes.obj.output.body.x }} {{ nodes.obj.output.body.tags | join(',') }}",
        "{{ nodes.obj.output }}",
        "{{ nodes.obj.output.items() | list }}",
        "{{ nodes.obj }}",
        "{{ nodes.obj.status }}",
        "{{ nodes['list'].output | length }}",
        "{% for id, node in nodes | items %}{{ id }}={{ node.output }};{% endfor %}",
        "{{ nodes.failed.output is none }} {{ nodes.failed.error.kind }}",
        "{{ nodes.list.output.missing }}",
        "{{ nodes.obj.output.body.missing }}",
        "{{ nodes.list.output is defined }}",
        "{{ trigger.body.name }}",
    ];
    for text in texts {
        let template = json!(text);
        assert_eq!(
            templates.render_run(&template, &kept),
            templates.render_value(&template, &inline),
            "{text}"
        );
        let each = templates.item_scope(&kept);
        let laid = each.render_value(&template, &json!("i"), 1);
        let copied = templates
            .item_scope(&inline_run)
            .render_value(&template, &json!("i"), 1);
        assert_eq!(laid, copied, "{text} as a foreach item");
    }
    for condition in [
        "nodes.list.output | length == 3",
        "nodes.list.output[0].a == 1",
    ] {
        assert_eq!(
            templates.eval_condition(condition, &kept),
            templates.eval_condition(condition, &inline_run),
            "{condition}"
        );
    }
    let each = json!("{{ nodes.list.output }}");
    assert_eq!(kept.named_value(&each).as_deref(), Some(&list));
    let inner = json!("{{ nodes.obj.output.body.tags }}");
    assert_eq!(
        kept.named_value(&inner).as_deref(),
        Some(&json!(["t", "u"]))
    );
}
