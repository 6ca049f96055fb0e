//! `roles`: role name -> the permissions it grants.

use super::Errors;
use crate::config::is_name;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn roles(
    raw: BTreeMap<String, Vec<String>>,
    e: &mut Errors,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut roles = BTreeMap::new();
    for (name, perms) in raw {
        if !is_name(&name) {
            e.push(format!("roles.{name}"), "role names are [A-Za-z0-9-_.:]+");
        }
        if perms.is_empty() {
            e.push(
                format!("roles.{name}"),
                "a role grants at least one permission",
            );
        }
        for p in &perms {
            if !is_name(p) {
                e.push(
                    format!("roles.{name}"),
                    format!("`{p}` is not a permission name ([A-Za-z0-9-_.:]+; permissions match exactly, no wildcards)"),
                );
            }
        }
        roles.insert(name, perms.into_iter().collect());
    }
    roles
}
