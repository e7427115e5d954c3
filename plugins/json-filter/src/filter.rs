//! The `filter` expression: parsed once when the operator opens, evaluated
//! for each record against the fields [`json_scan`] found.
//!
//! Grammar (whitespace between tokens is free):
//!
//! ```text
//! filter  = clause ( "and" clause )*
//! clause  = field op literal
//! field   = identifier | "json string"      e.g. amount, user_id, "total amount"
//! op      = "==" | "!=" | "<" | "<=" | ">" | ">="
//! literal = number | "json string" | true | false | null
//! ```
//!
//! Semantics, per clause:
//!
//! - Numbers compare numerically (as integers when both sides are written as
//!   integers that fit in 64 bits, otherwise as `f64`); strings compare their
//!   decoded bytes (so `<` is byte-wise, which is code-point order for UTF-8);
//!   `true`, `false` and `null` allow only `==` and `!=`.
//! - A record without the field, or with the field set to `null`, does not
//!   match a clause (except `field == null` matches `null`).
//! - A field holding a different type than the literal (`"17"` against a
//!   number, an object, an array) rejects the record with an error: that is
//!   a mismatch between the data and the pipeline, not a non-match.

use json_scan::{Fields, Kind, Object, Value};
use std::cmp::Ordering;
use weir_sdk::{Error, Preview};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord.is_eq(),
            Op::Ne => ord.is_ne(),
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Gt => ord.is_gt(),
            Op::Ge => ord.is_ge(),
        }
    }

    fn is_equality(self) -> bool {
        matches!(self, Op::Eq | Op::Ne)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    /// `int` is set when the literal is written as an integer that fits.
    Number {
        int: Option<i64>,
        float: f64,
    },
    /// Decoded bytes.
    String(Vec<u8>),
}

impl Literal {
    fn kind(&self) -> Kind {
        match self {
            Literal::Null => Kind::Null,
            Literal::Bool(_) => Kind::Bool,
            Literal::Number { .. } => Kind::Number,
            Literal::String(_) => Kind::String,
        }
    }
}

#[derive(Debug, Clone)]
struct Clause {
    /// Index of the field in the operator's [`Fields`].
    field: usize,
    name: String,
    op: Op,
    literal: Literal,
    /// The clause as written, for error messages.
    text: String,
}

/// A parsed filter: clauses that must all hold.
#[derive(Debug, Clone)]
pub struct Filter {
    clauses: Vec<Clause>,
}

impl Filter {
    /// Parses `text`, adding the fields it compares to `fields`.
    pub fn parse(text: &str, fields: &mut Fields) -> Result<Filter, String> {
        let mut p = Parser { text, pos: 0 };
        let mut clauses = Vec::new();
        p.ws();
        if p.at_end() {
            return Err("`filter` is empty: give a condition such as \"amount >= 10\", or leave `filter` out to keep every record".into());
        }
        loop {
            let start = p.pos;
            let name = p.field()?;
            p.ws();
            let op = p.op()?;
            p.ws();
            let literal = p.literal(op)?;
            let clause_text = text[start..p.pos].to_owned();
            if !op.is_equality() && matches!(literal, Literal::Null | Literal::Bool(_)) {
                return Err(p.error_at(start, &format!("`{clause_text}`: true, false and null allow only == and !=")));
            }
            clauses.push(Clause { field: fields.add(&name), name, op, literal, text: clause_text });
            p.ws();
            if p.at_end() {
                break;
            }
            p.keyword_and()?;
            p.ws();
        }
        Ok(Filter { clauses })
    }

    /// True when every clause holds for the scanned record.
    #[inline]
    pub fn matches(&self, obj: &Object<'_, '_>) -> Result<bool, Error> {
        for clause in &self.clauses {
            if !clause.holds(obj.get(clause.field))? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Clause {
    #[inline]
    fn holds(&self, value: Option<Value<'_>>) -> Result<bool, Error> {
        let Some(value) = value else {
            return Ok(false);
        };
        let ord = match (&self.literal, value.kind()) {
            (Literal::Null, kind) => {
                return Ok(if self.op == Op::Eq { kind == Kind::Null } else { kind != Kind::Null });
            }
            (_, Kind::Null) => return Ok(false),
            (Literal::Number { int, float }, Kind::Number) => compare_numbers(&value, *int, *float),
            (Literal::String(s), Kind::String) => value.str_cmp(s).unwrap_or(Ordering::Less),
            (Literal::Bool(b), Kind::Bool) => value.as_bool().unwrap_or(false).cmp(b),
            (literal, kind) => return Err(self.type_mismatch(&value, literal.kind(), kind)),
        };
        Ok(self.op.holds(ord))
    }

    fn type_mismatch(&self, value: &Value<'_>, wanted: Kind, found: Kind) -> Error {
        Error::msg(format_args!(
            "filter clause `{}` compares field {:?} with {}, but this record's {:?} (at byte {}) is {}: {}; \
             fix the data or change the filter",
            self.text,
            self.name,
            wanted.described(),
            self.name,
            value.offset(),
            found.described(),
            Preview(value.raw()),
        ))
    }
}

#[inline]
fn compare_numbers(value: &Value<'_>, int: Option<i64>, float: f64) -> Ordering {
    if let (Some(a), Some(b)) = (value.as_i64(), int) {
        return a.cmp(&b);
    }
    // A validated JSON number parses (huge ones as infinity), never as NaN.
    let a = value.as_f64().unwrap_or(f64::NAN);
    a.partial_cmp(&float).unwrap_or(Ordering::Less)
}

struct Parser<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos == self.text.len()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn error_at(&self, pos: usize, what: &str) -> String {
        format!("invalid `filter` {:?}: {what} (at position {pos})", self.text)
    }

    fn error(&self, what: &str) -> String {
        self.error_at(self.pos, what)
    }

    fn field(&mut self) -> Result<String, String> {
        let start = self.pos;
        let name = match self.peek() {
            Some(b'"') => {
                let mut scratch = Vec::new();
                let value = self.string_literal()?;
                String::from_utf8(value.str_bytes(&mut scratch).unwrap_or_default().to_vec()).unwrap_or_default()
            }
            Some(b) if is_ident_start(b) => {
                while self.peek().is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                self.text[start..self.pos].to_owned()
            }
            None => return Err(self.error("expected a field name after `and`")),
            Some(_) => return Err(self.error("expected a field name (such as amount, or \"a quoted name\")")),
        };
        if let Some(b'.' | b'[') = self.peek() {
            return Err(self.error("only top-level fields can be compared; nested paths such as a.b or a[0] are not supported"));
        }
        Ok(name)
    }

    fn string_literal(&mut self) -> Result<Value<'t>, String> {
        match json_scan::scan_value(self.text.as_bytes(), self.pos) {
            Ok((value, end)) => {
                self.pos = end;
                Ok(value)
            }
            Err(e) => Err(self.error_at(e.offset, e.reason)),
        }
    }

    fn op(&mut self) -> Result<Op, String> {
        let rest = &self.text.as_bytes()[self.pos..];
        let (op, len) = match rest {
            [b'=', b'=', ..] => (Op::Eq, 2),
            [b'!', b'=', ..] => (Op::Ne, 2),
            [b'<', b'=', ..] => (Op::Le, 2),
            [b'>', b'=', ..] => (Op::Ge, 2),
            [b'<', ..] => (Op::Lt, 1),
            [b'>', ..] => (Op::Gt, 1),
            [b'=', ..] => return Err(self.error("use == to compare for equality")),
            _ => return Err(self.error("expected a comparison (==, !=, <, <=, >, >=) after the field name")),
        };
        self.pos += len;
        Ok(op)
    }

    fn literal(&mut self, op: Op) -> Result<Literal, String> {
        let start = self.pos;
        if self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            let word_end = self.text[start..].find(|c: char| !is_ident_char(c as u8)).map_or(self.text.len(), |n| start + n);
            if !matches!(&self.text[start..word_end], "true" | "false" | "null") {
                return Err(self.error("expected a value: a number, a double-quoted string (user == \"bob\"), true, false or null"));
            }
        }
        let (value, end) = match json_scan::scan_value(self.text.as_bytes(), start) {
            Ok(found) => found,
            Err(e) if e.offset == start => {
                let what = format!("expected a value after `{}`: a number, a double-quoted string, true, false or null", op_symbol(op));
                return Err(self.error(&what));
            }
            Err(e) => return Err(self.error_at(e.offset, e.reason)),
        };
        let literal = match value.kind() {
            Kind::Null => Literal::Null,
            Kind::Bool => Literal::Bool(value.as_bool().unwrap_or(false)),
            Kind::Number => Literal::Number { int: value.as_i64(), float: value.as_f64().unwrap_or(f64::NAN) },
            Kind::String => {
                let mut scratch = Vec::new();
                Literal::String(value.str_bytes(&mut scratch).unwrap_or_default().to_vec())
            }
            Kind::Object | Kind::Array => {
                return Err(self.error("objects and arrays cannot be compared; compare with a number, string, true, false or null"));
            }
        };
        self.pos = end;
        Ok(literal)
    }

    fn keyword_and(&mut self) -> Result<(), String> {
        let rest = &self.text.as_bytes()[self.pos..];
        let is_and = rest.starts_with(b"and") && !rest.get(3).copied().is_some_and(is_ident_char);
        if !is_and {
            return Err(self.error("expected `and` or the end of the filter (clauses are joined with `and`)"));
        }
        self.pos += 3;
        Ok(())
    }
}

fn op_symbol(op: Op) -> &'static str {
    match op {
        Op::Eq => "==",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b == b'@'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'@' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Filter, String> {
        Filter::parse(text, &mut Fields::new())
    }

    #[test]
    fn parses_clauses_joined_by_and() {
        let mut fields = Fields::new();
        let f = Filter::parse(r#" amount>=10 and user == "user-0001"and "odd name" != null and ok==true"#, &mut fields).unwrap();
        let ops: Vec<Op> = f.clauses.iter().map(|c| c.op).collect();
        assert_eq!(ops, [Op::Ge, Op::Eq, Op::Ne, Op::Eq]);
        assert_eq!(f.clauses[0].literal, Literal::Number { int: Some(10), float: 10.0 });
        assert_eq!(f.clauses[1].literal, Literal::String(b"user-0001".to_vec()));
        assert_eq!(f.clauses[2].name, "odd name");
        assert_eq!(f.clauses[3].literal, Literal::Bool(true));
        assert_eq!(fields.name(f.clauses[1].field), "user");
        assert_eq!(f.clauses[0].text, "amount>=10");
    }

    #[test]
    fn literals() {
        let lit = |t: &str| parse(t).unwrap().clauses[0].literal.clone();
        assert_eq!(lit("x < -2.5e1"), Literal::Number { int: None, float: -25.0 });
        assert_eq!(lit(r#"x == "a\"b\u00e9""#), Literal::String("a\"bé".as_bytes().to_vec()));
        assert_eq!(lit("x != null"), Literal::Null);
        assert_eq!(lit("x == false"), Literal::Bool(false));
    }

    #[test]
    fn explains_syntax_errors() {
        let cases = [
            ("", "`filter` is empty"),
            ("   ", "`filter` is empty"),
            ("amount = 10", "use == to compare for equality (at position 7)"),
            ("amount >> 10", "expected a value after `>`: a number"),
            (r#"x == "a\qb""#, "invalid escape"),
            ("amount >=", "expected a value after `>=`"),
            ("user == bob", "double-quoted string (user == \"bob\")"),
            ("amount >= 10 or x == 1", "expected `and` or the end of the filter"),
            ("amount >= 10 and", "expected a field name after `and`"),
            ("a.b == 1", "nested paths"),
            ("x < true", "true, false and null allow only == and !="),
            ("x >= null", "true, false and null allow only == and !="),
            ("x == [1]", "objects and arrays cannot be compared"),
            ("x == 01", "leading zeros"),
            ("10 <= amount", "expected a field name"),
            ("amount", "expected a comparison"),
        ];
        for (text, wanted) in cases {
            let e = parse(text).err().unwrap_or_else(|| panic!("{text:?} parsed"));
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
    }
}
