//! A small YAML reader for deploy/compose.yaml, no crate needed: block mappings and sequences
//! by indentation, flow sequences of scalars, plain and quoted scalars, comments, anchors,
//! aliases and `<<` merge keys. Anything else (block scalars, flow mappings, multi-line
//! scalars, tabs) is an error, never a silent misreading: a compose file that needs more
//! fails the test until this grows.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Scalar(String),
    Null,
}

impl Yaml {
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// A sequence of scalars as strings.
    pub fn strings(&self) -> Result<Vec<String>, String> {
        match self {
            Yaml::Seq(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("not a scalar: {item:?}"))
                })
                .collect(),
            other => Err(format!("not a sequence: {other:?}")),
        }
    }
}

struct Line {
    number: usize,
    indent: usize,
    text: String,
}

struct Parser {
    lines: Vec<Line>,
    next: usize,
    anchors: HashMap<String, Yaml>,
}

pub fn parse(text: &str) -> Result<Yaml, String> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.contains('\t') {
            return Err(format!("line {}: a tab", index + 1));
        }
        let content = strip_comment(raw);
        let trimmed = content.trim_end();
        if trimmed.trim().is_empty() || trimmed.trim() == "---" {
            continue;
        }
        let indent = trimmed.len() - trimmed.trim_start().len();
        lines.push(Line {
            number: index + 1,
            indent,
            text: trimmed.trim_start().to_owned(),
        });
    }
    let mut parser = Parser {
        lines,
        next: 0,
        anchors: HashMap::new(),
    };
    if parser.lines.is_empty() {
        return Ok(Yaml::Null);
    }
    let value = parser.block(0)?;
    match parser.lines.get(parser.next) {
        Some(line) => Err(format!("line {}: unexpected indentation", line.number)),
        None => Ok(value),
    }
}

/// The line without its comment: a `#` at the start or after a space, outside quotes.
fn strip_comment(line: &str) -> String {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous == ' ' => return line[..i].to_owned(),
            None => {}
        }
        previous = c;
    }
    line.to_owned()
}

impl Parser {
    /// The block (mapping or sequence) whose lines are indented `indent`.
    fn block(&mut self, indent: usize) -> Result<Yaml, String> {
        let first = &self.lines[self.next];
        if first.indent != indent {
            return Err(format!("line {}: unexpected indentation", first.number));
        }
        if first.text == "-" || first.text.starts_with("- ") {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    fn sequence(&mut self, indent: usize) -> Result<Yaml, String> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.next) {
            if line.indent < indent {
                break;
            }
            let number = line.number;
            let Some(item) = line.text.strip_prefix("- ") else {
                return Err(format!("line {number}: expected a sequence item"));
            };
            if line.indent != indent || key_and_rest(item).is_some() {
                return Err(format!(
                    "line {number}: only scalars and flow sequences are read as sequence items"
                ));
            }
            let item = item.trim().to_owned();
            self.next += 1;
            items.push(self.inline(&item, number)?);
        }
        Ok(Yaml::Seq(items))
    }

    fn mapping(&mut self, indent: usize) -> Result<Yaml, String> {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        let mut merged: Vec<Yaml> = Vec::new();
        while let Some(line) = self.lines.get(self.next) {
            if line.indent < indent {
                break;
            }
            let number = line.number;
            if line.indent > indent {
                return Err(format!("line {number}: unexpected indentation"));
            }
            let Some((key, rest)) = key_and_rest(&line.text) else {
                return Err(format!("line {number}: expected `key: value`"));
            };
            let (key, rest) = (unquote(&key, number)?, rest.to_owned());
            self.next += 1;
            let (anchor, rest) = match rest.strip_prefix('&') {
                Some(anchored) => {
                    let (name, rest) = anchored.split_once(' ').unwrap_or((anchored, ""));
                    (Some(name.to_owned()), rest.trim().to_owned())
                }
                None => (None, rest),
            };
            let value = if rest.is_empty() {
                match self.lines.get(self.next) {
                    Some(child) if child.indent > indent => self.block(child.indent)?,
                    // A sequence may sit at its key's indentation.
                    Some(child)
                        if child.indent == indent
                            && (child.text == "-" || child.text.starts_with("- ")) =>
                    {
                        self.sequence(indent)?
                    }
                    _ => Yaml::Null,
                }
            } else {
                self.inline(&rest, number)?
            };
            if let Some(name) = anchor {
                self.anchors.insert(name, value.clone());
            }
            if key == "<<" {
                merged.push(value);
            } else if entries.iter().any(|(k, _)| *k == key) {
                return Err(format!("line {number}: duplicate key {key}"));
            } else {
                entries.push((key, value));
            }
        }
        // Merge keys: the mapping's own keys win over merged ones.
        for source in merged {
            let Yaml::Map(source) = source else {
                return Err("a << merge of something other than a mapping".to_owned());
            };
            for (k, v) in source {
                if !entries.iter().any(|(existing, _)| *existing == k) {
                    entries.push((k, v));
                }
            }
        }
        Ok(Yaml::Map(entries))
    }

    /// A value on the same line as its key or dash: an alias, a flow sequence, or a scalar.
    fn inline(&self, text: &str, number: usize) -> Result<Yaml, String> {
        if let Some(name) = text.strip_prefix('*') {
            return self
                .anchors
                .get(name)
                .cloned()
                .ok_or_else(|| format!("line {number}: unknown alias *{name}"));
        }
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| format!("line {number}: a flow sequence must end on its line"))?;
            return split_flow(inner, number)?
                .iter()
                .map(|item| Ok(Yaml::Scalar(unquote(item, number)?)))
                .collect::<Result<Vec<_>, String>>()
                .map(Yaml::Seq);
        }
        if text.starts_with(['{', '|', '>', '&', '!']) {
            return Err(format!("line {number}: unsupported YAML: {text}"));
        }
        Ok(Yaml::Scalar(unquote(text, number)?))
    }
}

/// `key: rest` (the colon followed by a space or ending the line), the key outside quotes.
fn key_and_rest(text: &str) -> Option<(String, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ':' => {
                let rest = &text[i + 1..];
                if rest.is_empty() || rest.starts_with(' ') {
                    return Some((text[..i].trim().to_owned(), rest.trim()));
                }
            }
            None => {}
        }
    }
    None
}

/// Splits the inside of `[...]` at commas outside quotes.
fn split_flow(inner: &str, number: usize) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in inner.chars() {
        current.push(c);
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '[' || c == '{' => {
                return Err(format!("line {number}: nested flow collections"));
            }
            None if c == ',' => {
                current.pop();
                items.push(current.trim().to_owned());
                current.clear();
            }
            None => {}
        }
    }
    if quote.is_some() {
        return Err(format!("line {number}: an unclosed quote"));
    }
    if !current.trim().is_empty() {
        items.push(current.trim().to_owned());
    }
    Ok(items)
}

/// A scalar's value: double-quoted (with `\"` and `\\`), single-quoted (`''`), or plain.
fn unquote(text: &str, number: usize) -> Result<String, String> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| format!("line {number}: an unclosed quote"))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(e @ ('"' | '\\' | '/')) => out.push(e),
                    other => {
                        return Err(format!("line {number}: unsupported escape \\{other:?}"));
                    }
                }
            } else {
                out.push(c);
            }
        }
        return Ok(out);
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or_else(|| format!("line {number}: an unclosed quote"))?;
        return Ok(inner.replace("''", "'"));
    }
    Ok(text.to_owned())
}

#[test]
fn the_reader_handles_what_compose_files_use_and_refuses_the_rest() {
    let text = r#"
x-base: &base
  image: app:local   # a comment
  environment: &env
    A: "1"
    B: 'two # not a comment'
services:
  one:
    <<: *base
    command: ["run", "--flag=a,b", 'x']
    environment:
      <<: *env
      B: three
  two:
    image: other
    ports:
      - "127.0.0.1:1:1"
      - plain:value
"#;
    let doc = parse(text).expect("parses");
    let one = doc.get("services").and_then(|s| s.get("one")).expect("one");
    assert_eq!(one.get("image").and_then(Yaml::as_str), Some("app:local"));
    assert_eq!(
        one.get("command").map(Yaml::strings),
        Some(Ok(vec!["run".into(), "--flag=a,b".into(), "x".into()]))
    );
    let env = one.get("environment").expect("environment");
    assert_eq!(env.get("A").and_then(Yaml::as_str), Some("1"));
    assert_eq!(env.get("B").and_then(Yaml::as_str), Some("three"));
    let base_env = doc.get("x-base").and_then(|b| b.get("environment"));
    assert_eq!(
        base_env.and_then(|e| e.get("B")).and_then(Yaml::as_str),
        Some("two # not a comment")
    );
    let ports = doc
        .get("services")
        .and_then(|s| s.get("two"))
        .and_then(|t| t.get("ports"))
        .map(Yaml::strings);
    assert_eq!(
        ports,
        Some(Ok(vec!["127.0.0.1:1:1".into(), "plain:value".into()]))
    );
    for unsupported in [
        "a: |\n  text\n",
        "a: {b: 1}\n",
        "a:\n  - b: 1\n",
        "a: *missing\n",
        "a: 1\na: 2\n",
        "a:\n\tb: 1\n",
    ] {
        assert!(parse(unsupported).is_err(), "{unsupported:?} parsed");
    }
}
