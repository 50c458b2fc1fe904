//! Environments (seed 002's development / staging / production): one
//! `backup.toml` with `[env.NAME]` tables whose keys override the rest of the
//! file when `--env NAME` (or `$RESPALDO_ENV`) selects them. Tables merge key
//! by key; any other value (strings, numbers, arrays) replaces the base one.
//!
//! One file rather than `backup.NAME.toml` copies: the sources, hooks and
//! notifications are shared and cannot drift apart, and what differs between
//! environments is visible in one place.

use crate::config::error::KeyError;

/// Applies `[env.NAME]` to `value` and removes every `[env.*]` table and the
/// top-level `environment` key, which names the environment the rest of the
/// file describes (`--env` with that name applies no table).
pub fn apply(value: &mut toml::Value, env: Option<&str>) -> Result<(), KeyError> {
    let toml::Value::Table(root) = value else {
        return Ok(());
    };
    let base = match root.remove("environment") {
        None => None,
        Some(toml::Value::String(name)) if valid_name(&name) => Some(name),
        Some(_) => return Err((
            vec!["environment".into()],
            "must be the name of the environment the file describes (letters, digits, `-`, `_`)"
                .into(),
        )),
    };
    let envs = match root.remove("env") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            return Err((
                vec!["env".into()],
                "must be a table of `[env.NAME]` tables".into(),
            ))
        }
    };
    for (name, v) in &envs {
        if !v.is_table() {
            return Err((vec!["env".into(), name.clone()], "must be a table".into()));
        }
        if v.get("env").is_some() {
            return Err((
                vec!["env".into(), name.clone(), "env".into()],
                "environments cannot be nested".into(),
            ));
        }
    }
    if let Some(b) = &base {
        if envs.contains_key(b) {
            return Err((
                vec!["env".into(), b.clone()],
                format!("`{b}` is the base configuration's name (`environment`), not an overlay"),
            ));
        }
    }
    let Some(name) = env else { return Ok(()) };
    if base.as_deref() == Some(name) {
        return Ok(());
    }
    let Some(overrides) = envs.get(name) else {
        let known: Vec<&str> = base
            .iter()
            .map(String::as_str)
            .chain(envs.keys().map(String::as_str))
            .collect();
        return Err((
            vec!["env".into()],
            format!(
                "no [env.{name}] table (environments: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    merge(root, overrides.as_table().expect("checked above"));
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[repository]
url = "/backups/prod"
verify_after_backup = true
[sources.db]
type = "postgres"
url = "postgres://prod/app"
[env.staging.repository]
url = "/backups/staging"
[env.staging.sources.db]
url = "postgres://staging/app"
"#;

    #[test]
    fn overrides_merge_key_by_key() {
        let mut v: toml::Value = toml::from_str(TEXT).unwrap();
        apply(&mut v, Some("staging")).unwrap();
        assert_eq!(v["repository"]["url"].as_str(), Some("/backups/staging"));
        assert_eq!(v["repository"]["verify_after_backup"].as_bool(), Some(true));
        assert_eq!(
            v["sources"]["db"]["url"].as_str(),
            Some("postgres://staging/app")
        );
        assert_eq!(v["sources"]["db"]["type"].as_str(), Some("postgres"));
        assert!(v.get("env").is_none());

        let mut v: toml::Value = toml::from_str(TEXT).unwrap();
        apply(&mut v, None).unwrap();
        assert_eq!(v["repository"]["url"].as_str(), Some("/backups/prod"));
        assert!(v.get("env").is_none());

        let mut v: toml::Value = toml::from_str(TEXT).unwrap();
        let e = apply(&mut v, Some("qa")).unwrap_err();
        assert!(e.1.contains("environments: staging"), "{}", e.1);
    }

    #[test]
    fn the_base_configuration_has_a_name_too() {
        let text = format!("environment = \"production\"\n{TEXT}");
        let mut v: toml::Value = toml::from_str(&text).unwrap();
        apply(&mut v, Some("production")).unwrap();
        assert_eq!(v["repository"]["url"].as_str(), Some("/backups/prod"));
        assert!(v.get("environment").is_none());

        let mut v: toml::Value = toml::from_str(&text).unwrap();
        apply(&mut v, Some("staging")).unwrap();
        assert_eq!(v["repository"]["url"].as_str(), Some("/backups/staging"));

        let mut v: toml::Value = toml::from_str(&text).unwrap();
        let e = apply(&mut v, Some("qa")).unwrap_err();
        assert!(e.1.contains("environments: production, staging"), "{}", e.1);

        let clash = format!("environment = \"staging\"\n{TEXT}");
        let mut v: toml::Value = toml::from_str(&clash).unwrap();
        let e = apply(&mut v, None).unwrap_err();
        assert_eq!(e.0, ["env", "staging"]);
    }
}
