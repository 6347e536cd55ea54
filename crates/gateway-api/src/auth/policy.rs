//! Who may call what: one table from (method, route) to the access it needs,
//! so that no handler can forget its check and a reviewer reads the whole
//! policy in one place. A route added later is an admin route until this
//! table says otherwise.

use axum::http::Method;

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without credentials: the health check, the login, the
    /// OpenAPI document, the page's static shell.
    Public,
    /// Any valid credentials, whatever the role (who am I, log out, change my password).
    Authenticated,
    /// `viewer` or more; anonymous too where anonymous reads are allowed.
    Read,
    /// `operator` or more: set-points, alarm acknowledgements.
    Operate,
    /// `admin`: devices, tags, connectors, users, tokens, the audit trail.
    Admin,
}

/// The access `method` on the route template `route` needs (`None`: no
/// route matched; the request gets its 404 without credentials).
pub fn required(method: &Method, route: Option<&str>) -> Access {
    let Some(route) = route else { return Access::Public };
    let read = *method == Method::GET || *method == Method::HEAD;
    match route {
        // The UI's files hold no data: the page signs in, then asks the API.
        "/" | "/ui/{*path}" | "/api/openapi.json" | "/api/v1/system/health" if read => Access::Public,
        "/api/v1/auth/login" => Access::Public,
        "/api/v1/auth/logout" | "/api/v1/auth/me" | "/api/v1/auth/password" => Access::Authenticated,
        r if r.starts_with("/api/v1/users") || r.starts_with("/api/v1/tokens") || r.starts_with("/api/v1/audit") => {
            Access::Admin
        }
        // Masked, but it still maps the plant: hosts, paths, brokers, webhooks.
        "/api/v1/system/config" => Access::Admin,
        "/api/v1/commands" if *method == Method::POST => Access::Operate,
        // Operators acknowledge and shelve alarms; rules are the admin's.
        "/api/v1/alarms/ack"
        | "/api/v1/alarms/{id}/ack"
        | "/api/v1/alarms/{id}/shelve"
        | "/api/v1/alarms/{id}/unshelve"
            if *method == Method::POST =>
        {
            Access::Operate
        }
        "/api/v1/history" | "/api/v1/history/{tag}/latest" if read => Access::Read,
        // Browsing reaches out to a device, and import changes one.
        "/api/v1/devices/{name}/browse" | "/api/v1/devices/{name}/import" => Access::Admin,
        _ if read => Access::Read,
        _ => Access::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_what_its_role_table_says() {
        use Access::*;
        let cases = [
            (Method::GET, "/api/v1/system/health", Public),
            (Method::GET, "/ui/{*path}", Public),
            (Method::POST, "/ui/{*path}", Admin),
            (Method::POST, "/api/v1/auth/login", Public),
            (Method::GET, "/api/v1/auth/me", Authenticated),
            (Method::GET, "/api/v1/values", Read),
            (Method::GET, "/ws", Read),
            (Method::GET, "/metrics", Read),
            (Method::GET, "/api/v1/devices/{name}", Read),
            (Method::GET, "/api/v1/history", Read),
            (Method::GET, "/api/v1/history/{tag}/latest", Read),
            (Method::DELETE, "/api/v1/history", Admin),
            (Method::GET, "/api/v1/devices/{name}/browse", Admin),
            (Method::POST, "/api/v1/devices/{name}/import", Admin),
            (Method::POST, "/api/v1/commands", Operate),
            (Method::POST, "/api/v1/alarms/{id}/ack", Operate),
            (Method::POST, "/api/v1/alarms/ack", Operate),
            (Method::POST, "/api/v1/alarms/{id}/shelve", Operate),
            (Method::POST, "/api/v1/alarms/{id}/unshelve", Operate),
            (Method::GET, "/api/v1/alarms/active", Read),
            (Method::GET, "/api/v1/alarms/rules", Read),
            (Method::POST, "/api/v1/alarms/rules", Admin),
            (Method::DELETE, "/api/v1/alarms/rules/{name}", Admin),
            (Method::POST, "/api/v1/devices", Admin),
            (Method::PUT, "/api/v1/devices/{name}", Admin),
            (Method::DELETE, "/api/v1/devices/{name}/tags/{tag}", Admin),
            (Method::GET, "/api/v1/users", Admin),
            (Method::GET, "/api/v1/tokens", Admin),
            (Method::GET, "/api/v1/audit", Admin),
            (Method::GET, "/api/v1/system/config", Admin),
            (Method::GET, "/api/v1/system/info", Read),
            (Method::POST, "/api/v1/system/health", Admin),
            (Method::PATCH, "/api/v1/values", Admin),
        ];
        for (m, r, want) in cases {
            assert_eq!(required(&m, Some(r)), want, "{m} {r}");
        }
        assert_eq!(required(&Method::DELETE, None), Public, "unknown paths answer 404 to anyone");
    }
}
