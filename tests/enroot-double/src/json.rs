//! A minimal JSON reader for image manifests and configurations (the double has no JSON
//! dependency; only reading is needed).

/// A parsed JSON value. Numbers keep their source text.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// Member of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// An array of strings (non-strings are skipped); empty for anything else.
    pub fn strings(&self) -> Vec<String> {
        self.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

/// Parse a complete JSON document.
pub fn parse(text: &str) -> Option<Value> {
    let mut p = Parser {
        text: text.as_bytes(),
        pos: 0,
    };
    let v = p.value(0)?;
    p.blank();
    (p.pos == p.text.len()).then_some(v)
}

impl Parser<'_> {
    const MAX_DEPTH: usize = 128;

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Option<Value> {
        let end = self.pos + word.len();
        (self.text.get(self.pos..end)? == word.as_bytes()).then(|| {
            self.pos = end;
            v
        })
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > Self::MAX_DEPTH {
            return None;
        }
        self.blank();
        match self.peek()? {
            b'n' => self.literal("null", Value::Null),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'"' => self.string().map(Value::String),
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.blank();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Some(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.blank();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b']' => {
                            self.pos += 1;
                            return Some(Value::Array(items));
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.pos += 1;
                let mut members = Vec::new();
                self.blank();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Some(Value::Object(members));
                }
                loop {
                    self.blank();
                    let key = self.string()?;
                    self.blank();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.pos += 1;
                    members.push((key, self.value(depth + 1)?));
                    self.blank();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b'}' => {
                            self.pos += 1;
                            return Some(Value::Object(members));
                        }
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.pos += 1;
                }
                let s = std::str::from_utf8(self.text.get(start..self.pos)?).ok()?;
                Some(Value::Number(s.to_string()))
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let s = std::str::from_utf8(self.text.get(self.pos..self.pos + 4)?).ok()?;
        self.pos += 4;
        u32::from_str_radix(s, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.text.get(self.pos..self.pos + 2) == Some(b"\\u")
                            {
                                self.pos += 2;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo.checked_sub(0xDC00)?)
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_image_config() {
        let text = r#"{"architecture":"amd64","config":{"Env":["PATH=/bin","A=\"q\" \u00e9"],
            "Entrypoint":["/bin/sh","-c"],"Cmd":null,"WorkingDir":"/work","Volumes":{"/data":{}}},
            "rootfs":{"type":"layers","diff_ids":[]},"n":-1.5e3,"t":true}"#;
        let v = parse(text).unwrap();
        let c = v.get("config").unwrap();
        assert_eq!(
            c.get("Env").unwrap().strings(),
            vec!["PATH=/bin", "A=\"q\" é"]
        );
        assert_eq!(
            c.get("Entrypoint").unwrap().strings(),
            vec!["/bin/sh", "-c"]
        );
        assert!(c.get("Cmd").unwrap().strings().is_empty());
        assert_eq!(c.get("WorkingDir").and_then(Value::as_str), Some("/work"));
        assert_eq!(c.get("Volumes").unwrap().as_object().unwrap()[0].0, "/data");
        assert_eq!(v.get("n"), Some(&Value::Number("-1.5e3".into())));
        assert_eq!(v.get("t"), Some(&Value::Bool(true)));
    }

    #[test]
    fn rejects_garbage_and_handles_surrogates() {
        assert!(parse("{").is_none());
        assert!(parse("[1,]").is_none());
        assert!(parse("{} x").is_none());
        assert_eq!(parse(r#""\ud83d\ude00""#), Some(Value::String("😀".into())));
        assert_eq!(parse(" [ ] "), Some(Value::Array(vec![])));
    }
}
