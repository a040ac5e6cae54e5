//! Small helpers over the Worker's JavaScript globals.

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::DedicatedWorkerGlobalScope;

pub fn global() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Milliseconds since the Worker started, from `performance.now()`: monotonic, unlike
/// `Date.now()`, and available where `std::time::Instant` panics.
pub fn now_ms() -> u64 {
    global().performance().map_or(0.0, |p| p.now()).max(0.0) as u64
}

/// Whether the Worker's address (the page passes its choices on) holds `key=value`.
pub fn query_has(key_value: &str) -> bool {
    global()
        .location()
        .search()
        .trim_start_matches('?')
        .split('&')
        .any(|kv| kv == key_value)
}

/// A random `u64` for engine seeds and peer ids.
pub fn random_u64() -> u64 {
    let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) ^ lo
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = global().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(promise).await;
}

/// Words for a thrown JavaScript value: `Name: message` for errors and DOMExceptions.
pub fn err_text(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    let name = get(e, "name").as_string();
    let message = get(e, "message").as_string();
    match (name, message) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (Some(n), _) => n,
        (None, Some(m)) => m,
        (None, None) => "unknown error".to_string(),
    }
}

/// The DOMException name of a thrown value (`NoModificationAllowedError`, ...), if it has one.
pub fn err_name(e: &JsValue) -> Option<String> {
    get(e, "name").as_string()
}

pub fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() && !obj.is_function() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// A plain object built key by key, for messages to the page.
pub struct Obj(Object);

impl Obj {
    pub fn new() -> Self {
        Obj(Object::new())
    }

    pub fn set(self, key: &str, value: impl Into<JsValue>) -> Self {
        // Setting a data property on a fresh plain object cannot throw.
        let _ = Reflect::set(&self.0, &JsValue::from_str(key), &value.into());
        self
    }

    pub fn set_opt(self, key: &str, value: Option<impl Into<JsValue>>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self.set(key, JsValue::NULL),
        }
    }
}

impl From<Obj> for JsValue {
    fn from(o: Obj) -> JsValue {
        o.0.into()
    }
}

/// Posts a message to the page.
pub fn post(msg: impl Into<JsValue>) {
    if let Err(e) = global().post_message(&msg.into()) {
        web_sys::console::error_1(&e);
    }
}
