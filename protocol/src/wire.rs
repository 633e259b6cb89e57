//! Enumerations that travel as strings (`nextAction`, `reason`, `code`, …): each is declared once
//! with [`wire_enum!`](crate::wire_enum), which gives it `as_str()`, `Display`, parsing and serde that use exactly
//! the wire names.
//!
//! Enums the host sends to followers also carry an `Unknown(String)` variant: a newer host may
//! send a value this crate does not know, and a follower must still decode the message (and can
//! show the value) instead of dropping it.

/// Declare a wire enum: `wire_enum! { Name { Variant = "wire_name", … } }`, optionally followed
/// by `unknown Unknown` to add a catch-all variant holding any other string.
#[macro_export]
#[doc(hidden)]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every known value.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The wire name.
            pub fn as_str(&self) -> &'static str {
                match self { $( $name::$variant => $wire ),+ }
            }

            /// The value with this wire name, if known.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s { $( $wire => Some($name::$variant), )+ _ => None }
            }
        }

        $crate::wire_enum!(@common $name);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                $name::from_wire(&s).ok_or_else(|| {
                    let shown: String = s.chars().take(64).collect();
                    serde::de::Error::custom(format!("unknown {} value {shown:?}", stringify!($name)))
                })
            }
        }
    };
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)? } unknown $unknown:ident
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version does not know (sent by a newer peer).
            $unknown(String),
        }

        impl $name {
            /// Every known value.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self { $( $name::$variant => $wire, )+ $name::$unknown(s) => s }
            }

            /// The value with this wire name; unknown names become the catch-all variant.
            pub fn from_wire(s: &str) -> Self {
                match s { $( $wire => $name::$variant, )+ other => $name::$unknown(other.to_owned()) }
            }

            /// Whether this is a value this version knows.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::$unknown(_))
            }

            /// The wire name of a known value, `"unknown"` otherwise: a bounded label for
            /// metrics and logs.
            pub fn label(&self) -> &'static str {
                match self { $( $name::$variant => $wire, )+ $name::$unknown(_) => "unknown" }
            }
        }

        $crate::wire_enum!(@common $name);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                // Bound what a peer can make us keep.
                let s: String = s.chars().take(128).collect();
                Ok($name::from_wire(&s))
            }
        }
    };
    (@common $name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::wire_enum! {
        /// Closed.
        Closed { A = "a", B = "b_b" }
    }
    crate::wire_enum! {
        /// Open.
        Open { X = "x" } unknown Other
    }

    #[test]
    fn wire_names_both_ways() {
        assert_eq!(Closed::B.as_str(), "b_b");
        assert_eq!(Closed::B.to_string(), "b_b");
        assert_eq!(serde_json::to_string(&Closed::A).unwrap(), "\"a\"");
        assert_eq!(
            serde_json::from_str::<Closed>("\"b_b\"").unwrap(),
            Closed::B
        );
        assert!(serde_json::from_str::<Closed>("\"c\"").is_err());
        assert_eq!(serde_json::from_str::<Open>("\"x\"").unwrap(), Open::X);
        let o: Open = serde_json::from_str("\"new\"").unwrap();
        assert_eq!(o, Open::Other("new".into()));
        assert!(!o.is_known());
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"new\"");
        assert_eq!(Closed::ALL.len(), 2);
        assert_eq!(Open::ALL, &[Open::X]);
        assert_eq!(o.label(), "unknown");
        assert_eq!(Open::X.label(), "x");
    }
}
