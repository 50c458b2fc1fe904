//! Accounts and grants (`mariadb-dump --system=users`): which accounts a
//! dump creates, and the statements a restore runs — never touching the
//! target server's own accounts (`root`, `mariadb.sys`, `mysql`), and
//! dropping an existing account first only when the restore is forced.

/// Accounts every server has of its own; a restore leaves them alone.
const BUILTIN: &[&str] = &["root", "mariadb.sys", "mysql"];

/// The account (`` `name`@`host` ``) a `CREATE USER` or `GRANT … TO` line
/// names, and whether the line creates it.
fn account(line: &str) -> Option<(String, bool)> {
    if let Some(rest) = line.strip_prefix("CREATE USER ") {
        let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
        return quoted_account(rest).map(|a| (a, true));
    }
    if line.starts_with("GRANT ") {
        let at = line.rfind(" TO `")?;
        return quoted_account(&line[at + 4..]).map(|a| (a, false));
    }
    None
}

/// `` `name`@`host` `` at the start of `s`.
fn quoted_account(s: &str) -> Option<String> {
    let name = quoted_end(s)?;
    let host = quoted_end(s[name..].strip_prefix('@')?)?;
    Some(s[..name + 1 + host].to_string())
}

/// Where the backquoted identifier at the start of `s` ends (a doubled
/// backquote is one backquote).
fn quoted_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'`') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        if b[i] == b'`' {
            if b.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn builtin(account: &str) -> bool {
    BUILTIN
        .iter()
        .any(|b| account.starts_with(&format!("`{b}`@")))
}

/// The accounts the dump creates, the server's own left out.
pub fn accounts(dump: &str) -> Vec<String> {
    dump.lines()
        .filter_map(account)
        .filter(|(a, creates)| *creates && !builtin(a))
        .map(|(a, _)| a)
        .collect()
}

/// The statements a restore runs: the dump without the lines about the
/// server's own accounts, after `DROP USER IF EXISTS` for each account in
/// `replace` (those that exist, when the restore is forced).
pub fn restore_script(dump: &str, replace: &[String]) -> String {
    let mut out = String::new();
    for a in replace {
        out.push_str(&format!("DROP USER IF EXISTS {a};\n"));
    }
    for line in dump.lines() {
        if account(line).is_some_and(|(a, _)| builtin(&a)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = "CREATE USER `mariadb.sys`@`localhost` ACCOUNT LOCK PASSWORD EXPIRE;
CREATE USER `root`@`localhost` IDENTIFIED BY PASSWORD '*D8';
CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*B6';
CREATE USER IF NOT EXISTS `re``port`@`10.0.0.%`;
GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION;
GRANT SELECT ON `shop`.* TO `app`@`%`;
SET ROLE NONE;
";

    #[test]
    fn the_servers_own_accounts_are_never_restored() {
        assert_eq!(accounts(USERS), ["`app`@`%`", "`re``port`@`10.0.0.%`"]);
        let s = restore_script(USERS, &["`app`@`%`".to_string()]);
        assert!(s.starts_with("DROP USER IF EXISTS `app`@`%`;\n"));
        assert!(!s.contains("root") && !s.contains("mariadb.sys"), "{s}");
        assert!(
            s.contains("GRANT SELECT ON `shop`.* TO `app`@`%`;") && s.contains("SET ROLE NONE;")
        );
    }
}
