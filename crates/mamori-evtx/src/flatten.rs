//! Rendered record JSON → one flat event, in a single streaming pass.
//!
//! The `evtx` crate renders a record as JSON bytes (`{"Event":{"System":{..},"EventData":{..}}}`)
//! with its fast template renderer. Rather than parse those bytes into a `serde_json::Value`
//! tree and walk it a second time, the seeds below visit the JSON once and write each leaf
//! straight into the flat event under its final name.
//!
//! Naming (the team's event model):
//! - `System` children: scalar elements keep their name (`Channel`, `Level`, ...); attributes of
//!   an element become `Element_Attribute` (`Provider_Name`, `Security_UserID`,
//!   `EventID_Qualifiers`), except `TimeCreated/@SystemTime` → `TimeCreated` and the
//!   `Execution` attributes, which keep their own names (`ProcessID`, `ThreadID`). The integer
//!   fields Windows defines (`EventID`, `Level`, ...) are numbers even when a log stored them as
//!   text.
//! - `EventData`, `UserData` and the rarer sections: every leaf by its element name (a named
//!   `Data` by its `Name`), attributes by their name (namespace declarations dropped), `#text` by
//!   its element's name, empty elements as `""`. A name met twice becomes an array. A leaf whose
//!   name a `System` field already took is written as `Section_Name` instead, so that `Channel`
//!   always is the record's channel.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::Event;

/// Fields Windows defines as integers; some logs (forwarded events, exports) store them as text.
const INTEGER_SYSTEM_FIELDS: &[&str] = &[
    "EventID",
    "EventID_Qualifiers",
    "Version",
    "Level",
    "Task",
    "Opcode",
    "EventRecordID",
    "ProcessID",
    "ThreadID",
];

/// The `System` keys nearly every record has: remembered as bits, without allocating.
const COMMON_SYSTEM_KEYS: &[&str] = &[
    "Provider_Name",
    "Provider_Guid",
    "Provider_EventSourceName",
    "EventID",
    "EventID_Qualifiers",
    "Version",
    "Level",
    "Task",
    "Opcode",
    "Keywords",
    "TimeCreated",
    "EventRecordID",
    "Correlation_ActivityID",
    "Correlation_RelatedActivityID",
    "ProcessID",
    "ThreadID",
    "Channel",
    "Computer",
    "Security_UserID",
];

/// Parse one rendered record into `event` (which should be empty).
pub(crate) fn flatten_record_json(json: &[u8], event: &mut Event) -> Result<(), serde_json::Error> {
    let mut flat = Flat { event, common_system_keys: 0, other_system_keys: Vec::new() };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    RootSeed { flat: &mut flat }.deserialize(&mut deserializer)?;
    deserializer.end()
}

struct Flat<'e> {
    event: &'e mut Event,
    /// Keys the `System` section wrote (data leaves with these names are renamed): bits of
    /// [`COMMON_SYSTEM_KEYS`], and the others.
    common_system_keys: u32,
    other_system_keys: Vec<String>,
}

impl Flat<'_> {
    fn insert_system(&mut self, key: String, value: Value) {
        let value =
            if INTEGER_SYSTEM_FIELDS.contains(&key.as_str()) { integer_if_digits(value) } else { value };
        match COMMON_SYSTEM_KEYS.iter().position(|common| *common == key) {
            Some(bit) => {
                self.common_system_keys |= 1 << bit;
                self.event.insert(key, value);
            }
            None => {
                if self.event.insert(key.clone(), value).is_none() {
                    self.other_system_keys.push(key);
                }
            }
        }
    }

    fn is_system_key(&self, key: &str) -> bool {
        match COMMON_SYSTEM_KEYS.iter().position(|common| *common == key) {
            Some(bit) => self.common_system_keys & (1 << bit) != 0,
            None => self.other_system_keys.iter().any(|taken| taken == key),
        }
    }

    fn insert_data(&mut self, section: &str, key: &str, value: Value) {
        if self.is_system_key(key) {
            let renamed = format!("{section}_{key}");
            merge_into(self.event, renamed, value);
        } else {
            merge_into(self.event, key.to_owned(), value);
        }
    }
}

/// Insert, or turn an existing value into an array holding both.
fn merge_into(event: &mut Event, key: String, value: Value) {
    match event.get_mut(&key) {
        None => {
            event.insert(key, value);
        }
        Some(Value::Array(items)) => match value {
            Value::Array(more) => items.extend(more),
            one => items.push(one),
        },
        Some(existing) => {
            let first = existing.take();
            let mut items = vec![first];
            match value {
                Value::Array(more) => items.extend(more),
                one => items.push(one),
            }
            *existing = Value::Array(items);
        }
    }
}

fn integer_if_digits(value: Value) -> Value {
    if let Value::String(text) = &value {
        let trimmed = text.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(number) = trimmed.parse::<u64>() {
                return Value::Number(number.into());
            }
        }
    }
    value
}

fn float_value(number: f64) -> Value {
    Number::from_f64(number).map(Value::Number).unwrap_or_else(|| Value::String(number.to_string()))
}

/// The renderer numbers a name it meets again in one element (`Application`, `Application_1`):
/// such a key goes back to its first name, where [`merge_into`] makes an array of them.
fn unnumbered<'k>(key: &'k str, event: &Event) -> &'k str {
    if let Some((base, suffix)) = key.rsplit_once('_') {
        if !base.is_empty()
            && !suffix.is_empty()
            && suffix.bytes().all(|b| b.is_ascii_digit())
            && event.contains_key(base)
        {
            return base;
        }
    }
    key
}

/// A map key, borrowed from the input when it holds no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// `{"Event": {...}}`
struct RootSeed<'f, 'e> {
    flat: &'f mut Flat<'e>,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RootSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a rendered EVTX record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == "Event" {
                map.next_value_seed(EventSeed { flat: &mut *self.flat })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `Event` element: `System` first, then one data section.
struct EventSeed<'f, 'e> {
    flat: &'f mut Flat<'e>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the Event element")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "System" => map.next_value_seed(SystemSeed { flat: &mut *self.flat })?,
                // The namespace declaration.
                "#attributes" => {
                    map.next_value::<IgnoredAny>()?;
                }
                section => map.next_value_seed(LeafSeed {
                    flat: &mut *self.flat,
                    section,
                    element: section,
                    // `EventData Name="..."` names the event's template, not a field.
                    container: true,
                })?,
            }
        }
        Ok(())
    }
}

/// The `System` element.
struct SystemSeed<'f, 'e> {
    flat: &'f mut Flat<'e>,
}

impl<'de> DeserializeSeed<'de> for SystemSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SystemSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the System element")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            map.next_value_seed(SystemElementSeed { flat: &mut *self.flat, element: &key })?;
        }
        Ok(())
    }
}

/// One child of `System`: a scalar, or an object with `#attributes` and maybe `#text`.
struct SystemElementSeed<'f, 'e, 'k> {
    flat: &'f mut Flat<'e>,
    element: &'k str,
}

fn system_attribute_key(element: &str, attribute: &str) -> String {
    match (element, attribute) {
        ("TimeCreated", "SystemTime") => "TimeCreated".to_owned(),
        ("Execution", _) => attribute.to_owned(),
        (element, attribute) => format!("{element}_{attribute}"),
    }
}

/// An element's `#attributes` object, each attribute handed to the closure as it is read.
struct AttributesSeed<F>(F);

impl<'de, F: FnMut(&str, Value)> DeserializeSeed<'de> for AttributesSeed<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(&str, Value)> Visitor<'de> for AttributesSeed<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("attributes")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(attribute) = map.next_key_seed(KeySeed)? {
            let value: Value = map.next_value()?;
            (self.0)(&attribute, value);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for SystemElementSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SystemElementSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a System field")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.flat.insert_system(self.element.to_owned(), Value::Bool(v));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.flat.insert_system(self.element.to_owned(), v.into());
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.flat.insert_system(self.element.to_owned(), v.into());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.flat.insert_system(self.element.to_owned(), float_value(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.flat.insert_system(self.element.to_owned(), Value::String(v.to_owned()));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.flat.insert_system(self.element.to_owned(), Value::String(v));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Not produced for System by Windows; keep the scalars rather than fail the record.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            if !item.is_object() && !item.is_array() && !item.is_null() {
                items.push(item);
            }
        }
        if !items.is_empty() {
            self.flat.insert_system(self.element.to_owned(), Value::Array(items));
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "#attributes" => {
                    let element = self.element;
                    let flat = &mut *self.flat;
                    map.next_value_seed(AttributesSeed(|attribute: &str, value: Value| {
                        if !value.is_null() && !value.is_object() && !value.is_array() {
                            flat.insert_system(system_attribute_key(element, attribute), value);
                        }
                    }))?;
                }
                "#text" => {
                    let value: Value = map.next_value()?;
                    if !value.is_null() && !value.is_object() {
                        self.flat.insert_system(self.element.to_owned(), value);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Any value inside a data section (`EventData`, `UserData`, ...), written leaf by leaf.
struct LeafSeed<'f, 'e, 's, 'k> {
    flat: &'f mut Flat<'e>,
    section: &'s str,
    /// The name a scalar here is written under.
    element: &'k str,
    /// The section element itself, whose attributes are not fields.
    container: bool,
}

impl LeafSeed<'_, '_, '_, '_> {
    fn put(self, value: Value) {
        self.flat.insert_data(self.section, self.element, value);
    }
}

impl<'de> DeserializeSeed<'de> for LeafSeed<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LeafSeed<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("event data")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // An empty element: Windows shows it as an empty value. An empty section is nothing.
        if !self.container {
            self.put(Value::String(String::new()));
        }
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Value::Bool(v));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.put(v.into());
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put(v.into());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put(float_value(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Value::String(v.to_owned()));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.put(Value::String(v));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Arrays are rare (positional `Data`, array-typed values): collect scalars, and
        // flatten any element objects under this name.
        let mut scalars = Vec::new();
        let mut objects = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            match item {
                Value::Null => scalars.push(Value::String(String::new())),
                Value::Object(object) => objects.push(object),
                Value::Array(inner) => scalars.extend(inner.into_iter().filter(is_scalar)),
                scalar => scalars.push(scalar),
            }
        }
        let section = self.section;
        let element = self.element;
        if !scalars.is_empty() {
            self.flat.insert_data(section, element, Value::Array(scalars));
        }
        for object in objects {
            flatten_value_object(self.flat, section, element, object);
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "#attributes" => {
                    if self.container {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let section = self.section;
                    let flat = &mut *self.flat;
                    map.next_value_seed(AttributesSeed(|attribute: &str, value: Value| {
                        if attribute.starts_with("xmlns") || value.is_object() || value.is_array() {
                            return;
                        }
                        let value = if value.is_null() { Value::String(String::new()) } else { value };
                        flat.insert_data(section, attribute, value);
                    }))?;
                }
                "#text" => map.next_value_seed(LeafSeed {
                    flat: &mut *self.flat,
                    section: self.section,
                    element: self.element,
                    container: false,
                })?,
                child => {
                    let child = unnumbered(child, self.flat.event);
                    map.next_value_seed(LeafSeed {
                        flat: &mut *self.flat,
                        section: self.section,
                        element: child,
                        container: false,
                    })?
                }
            }
        }
        Ok(())
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Object(_) | Value::Array(_))
}

/// The slow path for objects found inside arrays: same naming as [`LeafSeed`].
fn flatten_value_object(flat: &mut Flat<'_>, section: &str, element: &str, object: Map<String, Value>) {
    for (key, value) in object {
        let name: &str = match key.as_str() {
            "#attributes" => {
                if let Value::Object(attributes) = value {
                    for (attribute, value) in attributes {
                        if !attribute.starts_with("xmlns") && is_scalar(&value) {
                            flat.insert_data(section, &attribute, value);
                        }
                    }
                }
                continue;
            }
            "#text" => element,
            other => unnumbered(other, flat.event),
        };
        let name = name.to_owned();
        match value {
            Value::Object(inner) => flatten_value_object(flat, section, &name, inner),
            Value::Null => flat.insert_data(section, &name, Value::String(String::new())),
            Value::Array(items) => {
                let scalars: Vec<Value> = items.into_iter().filter(is_scalar).collect();
                if !scalars.is_empty() {
                    flat.insert_data(section, &name, Value::Array(scalars));
                }
            }
            scalar => flat.insert_data(section, &name, scalar),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(json: &str) -> Event {
        let mut event = Event::new();
        flatten_record_json(json.as_bytes(), &mut event).unwrap();
        event
    }

    // The inputs are in the form the `evtx` crate renders (see its `separate_json_attributes`
    // docs and the records printed by `examples/evtx_to_jsonl.rs`).

    #[test]
    fn system_attributes_and_qualifiers() {
        let event = flat(
            r##"{"Event":{"#attributes":{"xmlns":"x"},"System":{
                "Provider":{"#attributes":{"Name":"Service Control Manager","Guid":"{5559}"}},
                "EventID":{"#attributes":{"Qualifiers":16384},"#text":7045},
                "Level":4,"TimeCreated":{"#attributes":{"SystemTime":"2020-12-17T10:38:33.9511809Z"}},
                "Correlation":null,"Execution":{"#attributes":{"ProcessID":672,"ThreadID":10348}},
                "Channel":"System","Security":{"#attributes":{"UserID":"S-1-5-18"}}}}}"##,
        );
        assert_eq!(
            Value::Object(event),
            json!({"Provider_Name":"Service Control Manager","Provider_Guid":"{5559}",
                   "EventID":7045,"EventID_Qualifiers":16384,"Level":4,
                   "TimeCreated":"2020-12-17T10:38:33.9511809Z","ProcessID":672,"ThreadID":10348,
                   "Channel":"System","Security_UserID":"S-1-5-18"})
        );
    }

    #[test]
    fn system_integers_stored_as_text_become_numbers() {
        let event = flat(r##"{"Event":{"System":{"EventID":"4656","Keywords":"0x8020","Computer":"42"}}}"##);
        assert_eq!(event["EventID"], 4656);
        // Only the fields Windows defines as integers.
        assert_eq!(event["Keywords"], "0x8020");
        assert_eq!(event["Computer"], "42");
    }

    #[test]
    fn positional_data_binary_and_empty_values() {
        let event = flat(
            r##"{"Event":{"System":{"EventID":18456},"EventData":{"#attributes":{"Name":"TEMPLATE"},
                "Data":{"#text":["sa"," Reason: x",""]},"Binary":"1848"}}}"##,
        );
        assert_eq!(event["Data"], json!(["sa", " Reason: x", ""]));
        assert_eq!(event["Binary"], "1848");
        assert!(!event.contains_key("Name"), "the EventData template name is not a field");
        let event = flat(r##"{"Event":{"System":{},"EventData":{"Data":{"#text":"one"},"Empty":null}}}"##);
        assert_eq!(event["Data"], "one");
        assert_eq!(event["Empty"], "");
        let event = flat(r##"{"Event":{"System":{},"EventData":null}}"##);
        assert!(event.is_empty());
    }

    #[test]
    fn user_data_leaves_attributes_and_numbered_repeats() {
        let event = flat(
            r##"{"Event":{"System":{"Channel":"System"},"UserData":{"LogFileCleared":{
                "#attributes":{"xmlns":"http://manifests"},
                "SubjectUserName":"admmig","Channel":"Security","BackupPath":null,
                "Applications":{"Application":"a","Application_1":"b","Application_2":"c"},
                "Certificate":{"#attributes":{"fileRef":"3CD6.cer"}}}}}}"##,
        );
        assert_eq!(event["Channel"], "System", "System's Channel is kept");
        assert_eq!(event["UserData_Channel"], "Security");
        assert_eq!(event["SubjectUserName"], "admmig");
        assert_eq!(event["BackupPath"], "");
        assert_eq!(event["Application"], json!(["a", "b", "c"]));
        assert_eq!(event["fileRef"], "3CD6.cer");
        assert!(!event.contains_key("xmlns"));
        assert!(!event.contains_key("Application_1"));
    }

    #[test]
    fn unexpected_shapes_are_errors_not_panics() {
        let mut event = Event::new();
        assert!(flatten_record_json(b"{\"Event\":", &mut event).is_err());
        assert!(flatten_record_json(b"[1,2]", &mut event).is_err());
        assert!(flatten_record_json(b"{\"Event\":{\"System\":[1,{\"a\":2}]}} x", &mut event).is_err());
    }
}
