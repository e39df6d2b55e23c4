//! Console usernames: what is allowed, and the form compared for uniqueness.
//!
//! ASCII only (letters, digits, `.`, `_`, `-`, `@`), so that case folding is unambiguous and
//! two names cannot look alike while being different (no full-width or Cyrillic look-alikes);
//! `@` allows e-mail addresses as names.

/// The longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Why a username is refused. [`code`](Self::code) gives the console's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// The empty string.
    #[error("the username is empty")]
    Empty,
    /// Longer than [`MAX_USERNAME_CHARS`].
    #[error("the username is longer than {MAX_USERNAME_CHARS} characters")]
    TooLong,
    /// A character other than ASCII letters, digits, `.`, `_`, `-`, `@`.
    #[error("the username contains {0:?}; allowed are letters a-z, digits and . _ - @")]
    BadCharacter(char),
}

impl UsernameError {
    /// The stable code of this problem, which the console translates.
    pub fn code(self) -> &'static str {
        match self {
            UsernameError::Empty => "username_empty",
            UsernameError::TooLong => "username_too_long",
            UsernameError::BadCharacter(_) => "username_bad_character",
        }
    }
}

/// Checks a username as typed by an admin creating a user.
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if let Some(bad) =
        name.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(UsernameError::BadCharacter(bad));
    }
    // Only ASCII remains, so bytes are characters.
    if name.len() > MAX_USERNAME_CHARS {
        return Err(UsernameError::TooLong);
    }
    Ok(())
}

/// The form to store and compare: lowercase, so `Tanaka` and `tanaka` are the same user. Use it
/// for the unique key and for every lookup, including at login.
pub fn normalize_username(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in ["a", "tanaka", "Sato.Ichiro", "it-admin_2", "yamada@example.jp", &"x".repeat(64)] {
            assert_eq!(validate_username(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        assert_eq!(validate_username(""), Err(UsernameError::Empty));
        assert_eq!(validate_username(&"x".repeat(65)), Err(UsernameError::TooLong));
        assert_eq!(validate_username("tanaka taro"), Err(UsernameError::BadCharacter(' ')));
        assert_eq!(validate_username("田中"), Err(UsernameError::BadCharacter('田')));
        // Full-width Latin letters look like ASCII but are not.
        assert_eq!(validate_username("ａdmin"), Err(UsernameError::BadCharacter('ａ')));
        assert_eq!(validate_username("admin:x"), Err(UsernameError::BadCharacter(':')));
        assert_eq!(validate_username("a/b"), Err(UsernameError::BadCharacter('/')));
        assert_eq!(validate_username("a\0"), Err(UsernameError::BadCharacter('\0')));
        assert_eq!(UsernameError::BadCharacter(' ').code(), "username_bad_character");
    }

    #[test]
    fn names_differing_only_in_case_normalize_alike() {
        assert_eq!(normalize_username("Tanaka"), normalize_username("tANAKA"));
        assert_eq!(normalize_username("IT-Admin@Example.JP"), "it-admin@example.jp");
        assert_ne!(normalize_username("tanaka"), normalize_username("tanaka2"));
    }
}
