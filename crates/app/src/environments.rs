//! Environments (seed 002's development / staging / production): one
//! `backup.toml` with `[env.NAME]` tables whose keys override the rest of the
//! file when `--env NAME` (or `$RESPALDO_ENV`) selects them. Tables merge key
//! by key; any other value (strings, numbers, arrays) replaces the base one.
//!
//! One file rather than `backup.NAME.toml` copies: the sources, hooks and
//! notifications are shared and cannot drift apart, and what differs between
//! environments is visible in one place.

use crate::config::error::KeyError;

/// Applies `[env.NAME]` to `value` and removes every `[env.*]` table.
pub fn apply(value: &mut toml::Value, env: Option<&str>) -> Result<(), KeyError> {
    let toml::Value::Table(root) = value else {
        return Ok(());
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
    let Some(name) = env else { return Ok(()) };
    let Some(overrides) = envs.get(name) else {
        let known: Vec<&str> = envs.keys().map(String::as_str).collect();
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
}
