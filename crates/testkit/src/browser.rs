//! A scripted browser for login flows: follows nothing by itself, keeps a
//! cookie jar (host-only, path-scoped, ports ignored as in RFC 6265), and
//! lets tests read, drop or forge cookies between steps.

use std::collections::BTreeMap;

/// One cookie as the jar keeps it.
#[derive(Clone, Debug)]
pub struct Cookie {
    pub value: String,
    pub path: String,
}

pub struct Browser {
    http: reqwest::Client,
    /// name → cookie (one jar for all of 127.0.0.1).
    pub jar: BTreeMap<String, Cookie>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self::trusting(None)
    }

    /// A browser that also trusts the CA in `ca_file` (PEM), for pages
    /// served with test certificates.
    pub fn trusting(ca_file: Option<&std::path::Path>) -> Self {
        edge_tls::install_default_provider();
        let tls = edge_tls::client_config(ca_file).unwrap();
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .tls_backend_preconfigured((*tls).clone())
                .build()
                .unwrap(),
            jar: BTreeMap::new(),
        }
    }

    fn cookie_header(&self, url: &str) -> Option<String> {
        let path = url::Url::parse(url).ok()?.path().to_owned();
        let pairs: Vec<String> = self
            .jar
            .iter()
            .filter(|(_, c)| path.starts_with(&c.path))
            .map(|(n, c)| format!("{n}={}", c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn absorb(&mut self, res: &reqwest::Response) {
        for sc in res.headers().get_all("set-cookie") {
            let Ok(sc) = sc.to_str() else { continue };
            let mut parts = sc.split(';');
            let Some((name, value)) = parts.next().and_then(|kv| kv.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_owned();
            let mut expired = false;
            for attr in parts {
                let attr = attr.trim();
                let lower = attr.to_ascii_lowercase();
                if let Some(p) = lower.strip_prefix("path=") {
                    path = attr[5..5 + p.len()].to_owned();
                }
                if lower == "max-age=0" || lower.starts_with("expires=thu, 01 jan 1970") {
                    expired = true;
                }
            }
            if expired || value.is_empty() {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(
                    name.trim().to_owned(),
                    Cookie {
                        value: value.to_owned(),
                        path,
                    },
                );
            }
        }
    }

    /// Send a request with the jar's cookies; absorb Set-Cookie.
    pub async fn send(&mut self, req: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let req = match self.cookie_header(url) {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let res = crate::within("browser request", req.send()).await.unwrap();
        self.absorb(&res);
        res
    }

    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let req = self.http.get(url);
        self.send(req, url).await
    }

    /// POST with the CSRF header, as the console does.
    pub async fn post(&mut self, url: &str) -> reqwest::Response {
        let req = self.http.post(url).header("x-csrf", "1");
        self.send(req, url).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(String, String)]) -> reqwest::Response {
        let req = self.http.post(url).form(form);
        self.send(req, url).await
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// `Location` of a redirect, resolved against `base`.
    pub fn location(res: &reqwest::Response) -> String {
        assert!(
            res.status().is_redirection(),
            "expected a redirect, got {}",
            res.status()
        );
        let loc = res.headers()["location"].to_str().unwrap();
        res.url().join(loc).unwrap().to_string()
    }
}

/// Steps 1–2 of a login with the development provider against the
/// api-server at `api_base`: start it and pick `user` on the provider's
/// page. Returns the callback URL the provider redirects to (not yet
/// visited).
pub async fn dev_login_until_callback_at(
    api_base: &str,
    b: &mut Browser,
    user: &str,
    return_to: &str,
) -> String {
    let start = b
        .get(&format!(
            "{api_base}/api/auth/login?return_to={}",
            urlencode(return_to)
        ))
        .await;
    let authorize = Browser::location(&start);
    let page = b.get(&authorize).await;
    assert_eq!(page.status(), 200, "authorize page");
    let mut form: Vec<(String, String)> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("user".into(), user.into()));
    let action = authorize.split('?').next().unwrap().to_owned();
    let chosen = b.post_form(&action, &form).await;
    Browser::location(&chosen)
}

impl crate::Stack {
    /// [`dev_login_until_callback_at`] this stack's api-server.
    pub async fn dev_login_until_callback(
        &self,
        b: &mut Browser,
        user: &str,
        return_to: &str,
    ) -> String {
        dev_login_until_callback_at(&self.api(""), b, user, return_to).await
    }

    /// A complete login with the development provider; returns the
    /// callback's response (a 302 to `return_to` on success).
    pub async fn dev_login(&self, b: &mut Browser, user: &str) -> reqwest::Response {
        let callback = self.dev_login_until_callback(b, user, "/").await;
        b.get(&callback).await
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
