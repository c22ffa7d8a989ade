//! The browser's stylesheet, script and icon, embedded in the binary (no CDN, no framework) and served
//! under `/assets/`, cached by browsers for five minutes.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet.
pub const STYLE: &str = include_str!("assets/style.css");
/// The script: search-as-you-type and copy buttons; every page works without it.
pub const SCRIPT: &str = include_str!("assets/search.js");

/// The icon browsers show in the tab.
pub const ICON: &str = include_str!("assets/icon.svg");

/// Where pages link the stylesheet.
pub const STYLE_PATH: &str = "/assets/style.css";
/// Where pages load the script from.
pub const SCRIPT_PATH: &str = "/assets/search.js";
/// Where pages link the icon.
pub const ICON_PATH: &str = "/assets/icon.svg";

/// `GET /assets/{name}`: the stylesheet, the script or the icon; a 404 for anything else.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "search.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
