//! What a limited admin token may do (SPEC §5): which keys it sees and manages, and which
//! keys it may create. A limited token is someone's delegated power (an org owner's, a
//! workspace editor's), so it may only make keys inside its own scope and never stronger
//! than it was meant to hand out: otherwise a workspace editor could mint a key carrying
//! the org owner's permissions.

use crate::config::AdminToken;
use crate::error::AdminError;
use crate::service::KeyService;
use crate::store::{KeyRecord, UserRecord, ALL_WORKSPACES};
use std::collections::BTreeSet;

/// Whether a limited token may see and manage a key of `org` scoped to `workspaces`.
/// An org-limited token: keys of its orgs. A workspace-limited token: workspace keys of
/// its workspaces only (an org key reaches beyond them).
pub fn in_scope(token: &AdminToken, org: &str, workspaces: &[String]) -> bool {
    let org_ok = token
        .orgs
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x == org));
    let ws_ok = token.workspaces.as_ref().is_none_or(|allowed| {
        !workspaces.is_empty()
            && workspaces
                .iter()
                .all(|w| w != ALL_WORKSPACES && allowed.contains(w))
    });
    org_ok && ws_ok
}

pub fn key_in_scope(token: &AdminToken, key: &KeyRecord) -> bool {
    in_scope(token, &key.org, &key.workspaces)
}

/// The key, if the token may manage it.
pub fn check_key(token: &AdminToken, key: &KeyRecord) -> Result<(), AdminError> {
    if key_in_scope(token, key) {
        Ok(())
    } else {
        Err(AdminError::outside_scope(format!(
            "key {} is outside this token's orgs or workspaces",
            key.id
        )))
    }
}

/// What a create request asks for, as far as scope is concerned.
pub struct Asked<'a> {
    pub org: &'a str,
    /// As given; empty = an org key.
    pub workspaces: &'a [String],
    pub roles: &'a [String],
    pub inherit: bool,
    pub owner: Option<&'a str>,
}

/// Whether `token` may create the key `asked` describes: inside its org and workspaces,
/// with roles it may grant, and (when it has a role ceiling) a personal key only for a
/// recorded, present user of the org whose own roles are within that ceiling. An
/// inheriting key carries its owner's permissions, so the owner is checked the same way.
pub async fn check_create(
    svc: &KeyService,
    token: &AdminToken,
    asked: &Asked<'_>,
) -> Result<(), AdminError> {
    let scope: Vec<String> = if asked.workspaces.is_empty() {
        vec![ALL_WORKSPACES.to_owned()]
    } else {
        asked.workspaces.to_vec()
    };
    if !in_scope(token, asked.org, &scope) {
        return Err(AdminError::outside_scope(format!(
            "a key of org `{}` in workspaces [{}] is outside this token's orgs or workspaces",
            asked.org,
            scope.join(", ")
        )));
    }
    let Some(ceiling) = token.grantable_roles() else {
        return Ok(());
    };
    check_roles(ceiling, asked.roles)?;
    if let Some(owner) = asked.owner {
        let user = svc
            .store()
            .get_user(asked.org, owner)
            .await
            .map_err(store_error)?;
        check_user(svc, ceiling, asked.org, owner, user.as_ref(), false)?;
    } else if asked.inherit {
        // Refused by the service too; here so that no path skips the ceiling.
        return Err(AdminError::outside_scope(
            "an inheriting key needs an owner inside this token's scope",
        ));
    }
    Ok(())
}

/// Whether `token` may obtain a working secret of `key` (rotate it, reveal it): that is
/// minting the key anew, so the rules of `check_create` apply to what the key is. Else a
/// token with a ceiling could rotate the operator's editor key, or a workspace editor an
/// inheriting key of the org owner in its workspace, and hold a key stronger than any it
/// may create.
pub async fn check_mint(
    svc: &KeyService,
    token: &AdminToken,
    key: &KeyRecord,
) -> Result<(), AdminError> {
    check_key(token, key)?;
    let Some(ceiling) = token.grantable_roles() else {
        return Ok(());
    };
    check_roles(ceiling, &key.roles)?;
    if let Some(owner) = &key.owner {
        let user = svc
            .store()
            .get_user(&key.org, owner)
            .await
            .map_err(store_error)?;
        check_user(svc, ceiling, &key.org, owner, user.as_ref(), false)?;
    }
    Ok(())
}

fn store_error(e: crate::store::StoreError) -> AdminError {
    AdminError::Service(crate::service::ServiceError::Store(e))
}

/// Whether `token` may remove, restore or (with `new_roles`) set the roles of a user.
/// Users are org-level: a workspace token never may. A token with a role ceiling may act
/// on users within it only, and grant them only roles under it (an inheriting key
/// follows its owner's roles, so raising a user would raise their keys).
pub async fn check_user_op(
    svc: &KeyService,
    token: &AdminToken,
    org: &str,
    user: &str,
    new_roles: Option<&[String]>,
) -> Result<(), AdminError> {
    if token.workspaces.is_some() {
        return Err(AdminError::outside_scope(
            "users are managed at the org level; a workspace token cannot",
        ));
    }
    if !in_scope(token, org, &[ALL_WORKSPACES.to_owned()]) {
        return Err(AdminError::outside_scope(format!(
            "org `{org}` is outside this token's orgs"
        )));
    }
    let Some(ceiling) = token.grantable_roles() else {
        return Ok(());
    };
    let record = svc.store().get_user(org, user).await.map_err(store_error)?;
    // The user must be recorded within the ceiling already, before (no demoting the org
    // owner) as after. Recording a user's first roles is the operator's or an org owner's
    // act: a name keygate does not know could be anyone's, and once recorded under the
    // ceiling, personal keys acting as that person could be made.
    check_user(svc, ceiling, org, user, record.as_ref(), true)?;
    if let Some(roles) = new_roles {
        check_roles(ceiling, roles)?;
    }
    Ok(())
}

/// Whether `token` may suspend or restore an org: only the operator's (unlimited) token.
/// Suspension cuts off every key of an org, its owner's included, so it is not an act
/// an org's own delegated token may perform (nor undo).
pub fn check_org_switch(token: &AdminToken) -> Result<(), AdminError> {
    if token.is_unlimited() {
        Ok(())
    } else {
        Err(AdminError::outside_scope(
            "suspending or restoring an org is the operator's act; this token is limited",
        ))
    }
}

/// Whether `token` may read an org's state: a token limited to orgs reads its own orgs'
/// (a workspace token too: its keys are that org's, and answer for its state).
pub fn check_org_read(token: &AdminToken, org: &str) -> Result<(), AdminError> {
    if token
        .orgs
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x == org))
    {
        Ok(())
    } else {
        Err(AdminError::outside_scope(format!(
            "org `{org}` is outside this token's orgs"
        )))
    }
}

/// Every role asked for is one the token may grant.
pub fn check_roles(ceiling: &[String], asked: &[String]) -> Result<(), AdminError> {
    match asked.iter().find(|r| !ceiling.contains(r)) {
        None => Ok(()),
        Some(r) => Err(AdminError::outside_scope(format!(
            "this token may not grant role `{r}` (it may grant: {})",
            if ceiling.is_empty() {
                "none".to_owned()
            } else {
                ceiling.join(", ")
            }
        ))),
    }
}

/// A user a token with a role ceiling may act on or create a personal key for: recorded
/// in the org with roles (so it is known who they are), not removed, and with permissions
/// the ceiling's roles grant too. An unrecorded name could be anyone, the org owner too.
pub fn check_user(
    svc: &KeyService,
    ceiling: &[String],
    org: &str,
    user: &str,
    record: Option<&UserRecord>,
    removed_ok: bool,
) -> Result<(), AdminError> {
    let outside = |why: &str| {
        Err(AdminError::outside_scope(format!(
            "user `{user}` of org `{org}` {why}"
        )))
    };
    let Some(u) = record.filter(|u| !u.roles.is_empty()) else {
        return outside("has no roles recorded; a token with a role ceiling acts only for users whose roles it can see");
    };
    if u.removed && !removed_ok {
        return outside("is removed from the org");
    }
    let allowed: BTreeSet<String> = svc.permissions_of(ceiling).into_iter().collect();
    if u.permissions.iter().any(|p| !allowed.contains(p)) {
        return outside("holds permissions beyond the roles this token may grant");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(orgs: Option<&[&str]>, workspaces: Option<&[&str]>) -> AdminToken {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        AdminToken {
            name: "t".into(),
            sha256: [0; 32],
            orgs: orgs.map(v),
            workspaces: workspaces.map(v),
            roles: None,
        }
    }

    #[test]
    fn scopes() {
        let ws = |s: &str| vec![s.to_string()];
        let all = ws("*");
        let op = token(None, None);
        assert!(in_scope(&op, "acme", &all));
        let org = token(Some(&["acme"]), None);
        assert!(in_scope(&org, "acme", &all));
        assert!(in_scope(&org, "acme", &ws("team-a")));
        assert!(!in_scope(&org, "other", &ws("team-a")));
        let team = token(Some(&["acme"]), Some(&["team-a"]));
        assert!(in_scope(&team, "acme", &ws("team-a")));
        assert!(!in_scope(&team, "acme", &ws("team-b")));
        assert!(
            !in_scope(&team, "acme", &all),
            "an org key reaches beyond the workspace"
        );
        assert!(!in_scope(&team, "other", &ws("team-a")));
        let two = vec!["team-a".to_string(), "team-b".to_string()];
        assert!(
            !in_scope(&team, "acme", &two),
            "a key of two workspaces reaches beyond one"
        );
        let both = token(Some(&["acme"]), Some(&["team-a", "team-b"]));
        assert!(in_scope(&both, "acme", &two));
    }

    #[test]
    fn role_ceilings() {
        let mut t = token(Some(&["acme"]), None);
        assert_eq!(t.grantable_roles(), None, "an org token without a ceiling");
        t.workspaces = Some(vec!["team-a".into()]);
        assert_eq!(
            t.grantable_roles(),
            Some(&[][..]),
            "a workspace token names none"
        );
        t.roles = Some(vec!["viewer".into()]);
        assert_eq!(t.grantable_roles(), Some(&["viewer".to_string()][..]));
        let ceiling = t.grantable_roles().expect("a ceiling");
        assert!(check_roles(ceiling, &["viewer".into()]).is_ok());
        assert!(check_roles(ceiling, &["viewer".into(), "admin".into()]).is_err());
        assert!(check_roles(&[], &["viewer".into()]).is_err());
    }
}
