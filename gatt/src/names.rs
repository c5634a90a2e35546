//! The names of option values (a loss policy, a file format, where an instruction goes):
//! each such enum lists its values in an `ALL` constant and names them with `as_str`
//! (the names its serde form uses); its `FromStr` goes through [`parse`], so that every
//! one refuses a wrong name the same way, listing the valid ones.

/// Gives a fieldless enum `ALL`, `as_str`, `Display` and `FromStr` (errors: [`parse`]'s),
/// from a list of `Variant => "name"`.
macro_rules! named_values {
    ($ty:ident { $($variant:ident => $name:literal,)+ }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)+];

            /// The value's name, as files and serde spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                $crate::names::parse(s, $ty::ALL, $ty::as_str)
            }
        }
    };
}
pub(crate) use named_values;

/// The value of `all` whose name (`name(value)`) is `s`.
///
/// # Errors
///
/// `s` names no value: the message quotes it and lists the valid names, e.g.
/// "unknown value `x` (expected fail, skip)".
pub fn parse<T: Copy>(s: &str, all: &[T], name: impl Fn(T) -> &'static str) -> Result<T, String> {
    all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        format!("unknown value `{s}` (expected {})", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_by_name_and_lists_the_names_otherwise() {
        let name = |b: bool| if b { "yes" } else { "no" };
        assert_eq!(super::parse("no", &[true, false], name), Ok(false));
        assert_eq!(
            super::parse("maybe", &[true, false], name),
            Err("unknown value `maybe` (expected yes, no)".to_string())
        );
    }

    /// Every named enum's names are its serde names, and parse back.
    #[test]
    fn names_are_the_serde_names() {
        fn check<T>(all: &[T])
        where
            T: Copy + serde::Serialize + std::fmt::Display + std::str::FromStr + PartialEq,
            T::Err: std::fmt::Debug,
        {
            for &v in all {
                let name = v.to_string();
                assert_eq!(serde_json::to_value(v).unwrap(), name.as_str());
                assert!(name.parse::<T>().unwrap() == v, "{name}");
            }
        }
        check(crate::mask::Policy::ALL);
        check(crate::mask::Truncate::ALL);
        check(crate::mask::SpecialText::ALL);
        check(crate::mask::pipeline::OnError::ALL);
        check(crate::dataset::Format::ALL);
        check(crate::transform::Attach::ALL);
        check(crate::transform::Placement::ALL);
    }
}
