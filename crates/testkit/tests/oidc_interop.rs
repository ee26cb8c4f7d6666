//! Interop with a certified OpenID Provider: the api-server's full login,
//! scripted over HTTP, against npm's `oidc-provider` (pinned) with its
//! devInteractions login and consent pages, once as a public PKCE-only
//! client and once as a confidential client. The provider keeps its default
//! claims behaviour (no profile claims in the ID token of the code flow), so
//! the user's email and name can only come from UserInfo; the session then
//! ends through the provider's Back-Channel Logout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testkit::browser::Browser;
use testkit::oidc_provider;

/// The `action` of the first form in an HTML page and its hidden `prompt`.
fn form_of(html: &str) -> (String, String) {
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let prompt = html
        .split("name=\"prompt\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    (action.replace("&amp;", "&"), prompt.to_owned())
}

async fn login_through_provider(client_id: &str, confidential: bool) {
    let (stack, provider) = oidc_provider::stack_with(client_id, confidential).await;
    let callback = stack.api("/api/auth/callback");

    let mut b = Browser::new();
    let start = b
        .get(&stack.api("/api/auth/login?return_to=/welcome"))
        .await;
    let mut next = Browser::location(&start);
    assert!(next.starts_with(&provider.issuer), "{next}");
    assert!(
        next.contains("code_challenge_method=S256")
            && next.contains("nonce=")
            && next.contains("state=")
    );
    let mut prompts = Vec::new();
    // Walk the provider's redirects and pages until it sends us back.
    for _ in 0..12 {
        if next.starts_with(&callback) {
            break;
        }
        let res = b.get(&next).await;
        if res.status().is_redirection() {
            next = Browser::location(&res);
            continue;
        }
        assert_eq!(res.status(), 200, "unexpected page at {next}");
        let base = res.url().clone();
        let (action, prompt) = form_of(&res.text().await.unwrap());
        let action = base.join(&action).unwrap().to_string();
        let mut form = vec![("prompt".to_owned(), prompt.clone())];
        if prompt == "login" {
            form.push(("login".into(), "alice".into()));
            form.push(("password".into(), "anything".into()));
        }
        prompts.push(prompt);
        let posted = b.post_form(&action, &form).await;
        next = Browser::location(&posted);
    }
    assert!(next.starts_with(&callback), "never came back: {next}");
    assert_eq!(prompts, ["login", "consent"]);

    let done = b.get(&next).await;
    assert_eq!(done.status(), 302, "{:?}", done.text().await);
    assert_eq!(done.headers()["location"], "/welcome");
    let me = b.get(&stack.api("/api/auth/me")).await;
    assert_eq!(me.status(), 200);
    let user = stack
        .store
        .upsert_user(&provider.issuer, "alice", None, None)
        .await
        .unwrap();
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(
        me["id"],
        user.id.to_string(),
        "user keyed by the provider's issuer and subject"
    );
    assert_eq!(me["email"], "alice@example.test", "email from UserInfo");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["name"], "User alice", "name from UserInfo");

    // The user signs out at the provider; it tells us over the back channel.
    let end = format!("{}/session/end?client_id={client_id}", provider.issuer);
    let page = b.get(&end).await;
    assert_eq!(page.status(), 200);
    let base = page.url().clone();
    let html = page.text().await.unwrap();
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let xsrf = html
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let confirm = base.join(action).unwrap().to_string();
    let form = [
        ("xsrf".to_owned(), xsrf.to_owned()),
        ("logout".to_owned(), "yes".to_owned()),
    ];
    let done = b.post_form(&confirm, &form).await;
    assert!(done.status().is_redirection() || done.status().is_success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let status = b.get(&stack.api("/api/auth/me")).await.status();
        if status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session alive 1 s after the provider's logout"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_oidc_provider, require_interop)),
    ignore = "needs oidc-provider: npm ci --prefix interop/oidc-provider"
)]
async fn public_pkce_only_client_logs_in_against_oidc_provider() {
    if oidc_provider::available().is_none() {
        return;
    }
    login_through_provider("public-client", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_oidc_provider, require_interop)),
    ignore = "needs oidc-provider: npm ci --prefix interop/oidc-provider"
)]
async fn confidential_client_logs_in_against_oidc_provider() {
    if oidc_provider::available().is_none() {
        return;
    }
    login_through_provider("confidential-client", true).await;
}
