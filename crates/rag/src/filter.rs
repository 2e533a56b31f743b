//! Metadata filters: one small language, evaluated in Rust (embedded store) or compiled to SQL
//! over `jsonb` (PostgreSQL), with the same meaning on both.
//!
//! ```json
//! {"lang": "en", "year": {"$gte": 2020}, "tags": {"$in": ["faq", "manual"]},
//!  "$or": [{"product": "x1"}, {"draft": {"$exists": false}}]}
//! ```
//! Top-level keys are ANDed. A plain value means equality. Values compared for equality are
//! scalars (string, number, boolean, null); range operators take numbers and match only numeric
//! fields. `$ne` / `$nin` also match chunks that lack the field.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Eq(String, Value),
    In(String, Vec<Value>),
    Cmp(String, CmpOp, f64),
    Exists(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
        }
    }
}

/// Why a filter was refused; shown to the client as a 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed filter: {0}")]
pub struct FilterError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

const MAX_DEPTH: usize = 8;
const MAX_NODES: usize = 256;

impl Filter {
    /// Parse the JSON form; `null` or `{}` match everything.
    pub fn parse(v: &Value) -> Result<Filter, FilterError> {
        let mut nodes = 0;
        parse_object(v, 0, &mut nodes)
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Filter::All)
    }

    /// Does a chunk with this metadata pass?
    pub fn matches(&self, meta: &Map<String, Value>) -> bool {
        match self {
            Filter::All => true,
            Filter::And(fs) => fs.iter().all(|f| f.matches(meta)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(meta)),
            Filter::Not(f) => !f.matches(meta),
            Filter::Eq(k, v) => meta.get(k).is_some_and(|m| scalar_eq(m, v)),
            Filter::In(k, vs) => meta.get(k).is_some_and(|m| vs.iter().any(|v| scalar_eq(m, v))),
            Filter::Cmp(k, op, x) => meta.get(k).and_then(Value::as_f64).is_some_and(|m| match op {
                CmpOp::Gt => m > *x,
                CmpOp::Gte => m >= *x,
                CmpOp::Lt => m < *x,
                CmpOp::Lte => m <= *x,
            }),
            Filter::Exists(k) => meta.contains_key(k),
        }
    }
}

/// JSON equality as PostgreSQL's `jsonb @>` sees scalars: numbers by value (1 == 1.0).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn check_field(k: &str) -> Result<(), FilterError> {
    if k.is_empty() || k.len() > 128 {
        return err("field names must be 1 to 128 characters");
    }
    if k.starts_with('$') {
        return err(format!("unknown operator `{k}` (known: $and, $or, $not)"));
    }
    Ok(())
}

fn parse_object(v: &Value, depth: usize, nodes: &mut usize) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let obj = match v {
        Value::Null => return Ok(Filter::All),
        Value::Object(o) => o,
        other => return err(format!("a filter is a JSON object, got {}", type_name(other))),
    };
    let mut parts = Vec::new();
    for (k, val) in obj {
        *nodes += 1;
        if *nodes > MAX_NODES {
            return err(format!("more than {MAX_NODES} conditions"));
        }
        let f = match k.as_str() {
            "$and" | "$or" => {
                let list = val.as_array().ok_or_else(|| FilterError(format!("`{k}` takes an array of filters")))?;
                if list.is_empty() {
                    return err(format!("`{k}` needs at least one filter"));
                }
                let fs = list.iter().map(|f| parse_object(f, depth + 1, nodes)).collect::<Result<Vec<_>, _>>()?;
                if k == "$and" {
                    Filter::And(fs)
                } else {
                    Filter::Or(fs)
                }
            }
            "$not" => Filter::Not(Box::new(parse_object(val, depth + 1, nodes)?)),
            field => {
                check_field(field)?;
                parse_condition(field, val)?
            }
        };
        parts.push(f);
    }
    Ok(match parts.len() {
        0 => Filter::All,
        1 => parts.pop().expect("one"),
        _ => Filter::And(parts),
    })
}

fn parse_condition(field: &str, val: &Value) -> Result<Filter, FilterError> {
    let ops = match val {
        Value::Object(o) => o,
        v if is_scalar(v) => return Ok(Filter::Eq(field.into(), v.clone())),
        _ => return err(format!("`{field}`: compare with a scalar or an operator object, not an array")),
    };
    if ops.is_empty() {
        return err(format!("`{field}`: empty operator object"));
    }
    let mut parts = Vec::new();
    for (op, arg) in ops {
        let f = match op.as_str() {
            "$eq" | "$ne" => {
                if !is_scalar(arg) {
                    return err(format!("`{field}`: `{op}` takes a scalar"));
                }
                let eq = Filter::Eq(field.into(), arg.clone());
                if op == "$eq" {
                    eq
                } else {
                    Filter::Not(Box::new(eq))
                }
            }
            "$in" | "$nin" => {
                let list = arg.as_array().ok_or_else(|| FilterError(format!("`{field}`: `{op}` takes an array")))?;
                if list.is_empty() || list.len() > 1024 || !list.iter().all(is_scalar) {
                    return err(format!("`{field}`: `{op}` takes 1 to 1024 scalars"));
                }
                let f = Filter::In(field.into(), list.clone());
                if op == "$in" {
                    f
                } else {
                    Filter::Not(Box::new(f))
                }
            }
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let x = arg.as_f64().filter(|x| x.is_finite()).ok_or_else(|| FilterError(format!("`{field}`: `{op}` takes a number")))?;
                let cmp = match op.as_str() {
                    "$gt" => CmpOp::Gt,
                    "$gte" => CmpOp::Gte,
                    "$lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                Filter::Cmp(field.into(), cmp, x)
            }
            "$exists" => match arg {
                Value::Bool(true) => Filter::Exists(field.into()),
                Value::Bool(false) => Filter::Not(Box::new(Filter::Exists(field.into()))),
                _ => return err(format!("`{field}`: `$exists` takes true or false")),
            },
            other => return err(format!("`{field}`: unknown operator `{other}` (known: $eq $ne $in $nin $gt $gte $lt $lte $exists)")),
        };
        parts.push(f);
    }
    Ok(if parts.len() == 1 { parts.pop().expect("one") } else { Filter::And(parts) })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn evaluates_the_language() {
        let m = meta(json!({"lang": "en", "year": 2021, "draft": false, "n": 1.0}));
        let ok = |f: Value| Filter::parse(&f).unwrap().matches(&m);
        assert!(ok(json!({})));
        assert!(ok(json!(null)));
        assert!(ok(json!({"lang": "en"})));
        assert!(!ok(json!({"lang": "fr"})));
        assert!(ok(json!({"n": 1})));
        assert!(ok(json!({"year": {"$gte": 2020, "$lt": 2022}})));
        assert!(!ok(json!({"year": {"$gt": 2021}})));
        assert!(!ok(json!({"lang": {"$gt": 1}})));
        assert!(ok(json!({"lang": {"$in": ["de", "en"]}})));
        assert!(ok(json!({"missing": {"$ne": "x"}})));
        assert!(ok(json!({"missing": {"$nin": ["x"]}})));
        assert!(ok(json!({"missing": {"$exists": false}, "draft": {"$exists": true}})));
        assert!(ok(json!({"$or": [{"lang": "fr"}, {"draft": false}]})));
        assert!(!ok(json!({"$not": {"lang": "en"}})));
    }

    #[test]
    fn refuses_malformed_filters() {
        for bad in [
            json!([1, 2]),
            json!("lang"),
            json!({"lang": [1]}),
            json!({"lang": {}}),
            json!({"lang": {"$regex": "x"}}),
            json!({"$xor": []}),
            json!({"$or": []}),
            json!({"$or": {"a": 1}}),
            json!({"year": {"$gt": "2020"}}),
            json!({"tags": {"$in": []}}),
            json!({"tags": {"$in": [[1]]}}),
            json!({"a": {"$exists": 1}}),
            json!({"": 1}),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad} should be refused");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..12 {
            deep = json!({"$not": deep});
        }
        assert!(Filter::parse(&deep).is_err());
    }
}
