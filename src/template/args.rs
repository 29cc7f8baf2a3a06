//! Python-style argument binding for filters and tests.
//!
//! Ansible filters are Python functions, so templates pass their arguments either by
//! position or by keyword (`truncate(8, True, '')`, `random(61, 1, seed=x)`). minijinja
//! hands a filter its positional values and a `Kwargs` map; [`bind`] maps both onto the
//! parameter names the same way Python does and rejects unknown or doubled names.

use minijinja::value::{Kwargs, StringInput, Value};
use minijinja::{Error, ErrorKind, State};

/// Binds `args` and `kwargs` to `params` (in order); `Option::None` marks "not given".
pub fn bind<const N: usize>(
    filter: &str,
    params: [&str; N],
    args: &[Value],
    kwargs: &Kwargs,
) -> Result<[Option<Value>; N], Error> {
    if args.len() > N {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            format!(
                "{filter}() takes at most {N} argument(s) after the value ({}), got {}",
                params.join(", "),
                args.len()
            ),
        ));
    }
    let mut out: [Option<Value>; N] = std::array::from_fn(|i| args.get(i).cloned());
    for key in kwargs.args() {
        let idx = params.iter().position(|p| *p == key).ok_or_else(|| {
            Error::new(
                ErrorKind::TooManyArguments,
                format!(
                    "{filter}() got an unexpected keyword argument '{key}' (accepted: {})",
                    params.join(", ")
                ),
            )
        })?;
        if out[idx].is_some() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{filter}() got multiple values for argument '{key}'"),
            ));
        }
        out[idx] = Some(kwargs.get::<Value>(key)?);
    }
    kwargs.assert_all_used()?;
    // Ansible's undefined values raise as soon as a filter uses them. Only filters that
    // may leave an argument unused (a ternary branch, a conversion default, a message)
    // accept undefined arguments; minijinja still fails if such a value gets printed.
    if !matches!(filter, "ternary" | "int" | "float" | "mandatory") {
        for (name, v) in params.iter().zip(&out) {
            if v.as_ref().is_some_and(Value::is_undefined) {
                return Err(Error::new(
                    ErrorKind::UndefinedError,
                    format!("{filter}(): argument '{name}' is undefined"),
                ));
            }
        }
    }
    Ok(out)
}

/// Fails with minijinja's undefined error (naming the expression) if `value` is undefined.
///
/// Ansible's undefined values are strict: a filter that touches one raises. Filters
/// that take `&Value` would otherwise see the undefined silently.
pub fn ensure_defined(state: &State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        StringInput::new(state, value)?;
    }
    Ok(())
}

/// Python truthiness of an optional argument (`None` → `default`).
pub fn flag(v: &Option<Value>, default: bool) -> bool {
    v.as_ref().map(|v| v.is_true()).unwrap_or(default)
}

/// An optional argument that must be a string.
pub fn opt_str(filter: &str, name: &str, v: &Option<Value>) -> Result<Option<String>, Error> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => match v.as_str() {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{filter}(): argument '{name}' must be a string, got {}",
                    v.kind()
                ),
            )),
        },
    }
}

/// An optional argument that must be an integer.
pub fn opt_int(filter: &str, name: &str, v: &Option<Value>) -> Result<Option<i128>, Error> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) if v.is_integer() || v.kind() == minijinja::value::ValueKind::Bool => Ok(Some(
            i128::try_from(v.clone()).unwrap_or(i128::from(v.is_true())),
        )),
        Some(v) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{filter}(): argument '{name}' must be an integer, got {v:?}"),
        )),
    }
}
