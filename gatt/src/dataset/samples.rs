//! Reading masked samples back: JSON lines, or Parquet column by column in memory.
//!
//! Sample `i` of the result is row `i` of the file (0-based, blank JSONL lines are not
//! rows), the row `gatt inspect --row i` shows and errors name.

use super::parquet::open_reader;
use super::Location;
use crate::error::{Error, Result};
use crate::mask::MaskedSample;
use polars::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::Path;

#[derive(serde::Deserialize)]
struct SampleLine {
    id: String,
    input_ids: Vec<u32>,
    labels: Vec<i64>,
    #[serde(default)]
    attention_mask: Option<Vec<u8>>,
}

/// A sample whose attention mask defaults to all ones.
fn sample(
    id: String,
    input_ids: Vec<u32>,
    labels: Vec<i64>,
    mask: Option<Vec<u8>>,
) -> MaskedSample {
    let n = input_ids.len();
    MaskedSample {
        id,
        input_ids,
        labels,
        attention_mask: mask.unwrap_or_else(|| vec![1; n]),
    }
}

/// Masked samples of a JSONL file, one per non-blank line.
pub fn read_jsonl(path: &Path) -> Result<Vec<MaskedSample>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, "read", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let loc = Location::in_file(path).at_line(i + 1).at_row(out.len());
        let de = &mut serde_json::Deserializer::from_str(&line);
        let s: SampleLine = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let at = if field == "." || inner.is_syntax() || inner.is_eof() {
                loc.clone()
            } else {
                loc.clone().with_field(field)
            };
            Error::input(format!("not a masked sample: {inner}"))
                .at(at)
                .with_source(inner)
        })?;
        out.push(sample(s.id, s.input_ids, s.labels, s.attention_mask));
    }
    Ok(out)
}

/// Masked samples of a Parquet file, read from `path` into memory.
pub fn read_parquet(path: &Path) -> Result<Vec<MaskedSample>> {
    let file = || Location::in_file(path);
    let df = open_reader(path)?.finish().map_err(|e| {
        Error::input(format!("not a readable Parquet file: {e}"))
            .at(file())
            .with_source(e)
    })?;
    let column = |name: &str| {
        df.column(name).map_err(|_| {
            Error::input(format!(
                "not a masked sample: no `{name}` column (a file written by `gatt mask` has \
                 id, input_ids, labels, attention_mask)"
            ))
            .at(file())
        })
    };
    let ids = column("id")?.cast(&DataType::String)?;
    let ids = ids.str()?;
    let input_ids = lists::<UInt32Type>(path, column("input_ids")?)?;
    let labels = lists::<Int64Type>(path, column("labels")?)?;
    let masks = match df.column("attention_mask") {
        Ok(c) => Some(lists::<UInt8Type>(path, c)?),
        Err(_) => None,
    };
    let mut out = Vec::with_capacity(df.height());
    for (row, id) in ids.iter().enumerate() {
        let at = |field: &str| file().at_row(row).with_field(field);
        let id = id
            .ok_or_else(|| Error::input("missing").at(at("id")))?
            .to_string();
        let loc = |field: &str| at(field).with_id(id.clone());
        let ids = values(&input_ids[row], "a token id", || loc("input_ids"))?;
        let labels = values(&labels[row], "a token id or -100", || loc("labels"))?;
        let mask = match &masks {
            Some(m) => Some(values(&m[row], "0 or 1", || loc("attention_mask"))?),
            None => None,
        };
        out.push(sample(id, ids, labels, mask));
    }
    Ok(out)
}

/// One list per row; `None` for a missing list or a value the column type cannot hold.
type Lists<T> = Vec<Option<Vec<Option<T>>>>;

/// The rows of a list-of-integers column as `T` (a value out of `T`'s range is `None`).
///
/// Lists of `T` are read as they are; lists of other integers are cast to `i64` first
/// (polars casts only between its 32- and 64-bit types).
fn lists<T>(path: &Path, col: &Column) -> Result<Lists<T::Native>>
where
    T: PolarsNumericType,
    T::Native: TryFrom<i64>,
{
    let not_ints = || {
        Error::input(format!(
            "not a masked sample: column `{}` holds {}, not lists of integers",
            col.name(),
            col.dtype()
        ))
        .at(Location::in_file(path))
    };
    let inner = match col.dtype() {
        DataType::List(inner) if inner.is_integer() => inner.as_ref().clone(),
        _ => return Err(not_ints()),
    };
    if inner == T::get_static_dtype() {
        return Ok(arrow_lists::<T::Native>(col.list()?));
    }
    if !matches!(
        inner,
        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
    ) {
        return Err(not_ints());
    }
    let wide = col.cast(&DataType::List(Box::new(DataType::Int64)))?;
    Ok(arrow_lists::<i64>(wide.list()?)
        .into_iter()
        .map(|row| {
            row.map(|r| {
                r.into_iter()
                    .map(|v| v.and_then(|v| T::Native::try_from(v).ok()))
                    .collect()
            })
        })
        .collect())
}

/// The rows of a list column whose values are `N`, straight from its arrow arrays.
fn arrow_lists<N: polars_arrow::types::NativeType>(list: &ListChunked) -> Lists<N> {
    use polars_arrow::array::{Array, PrimitiveArray};
    let mut out = Vec::with_capacity(list.len());
    for arr in list.downcast_iter() {
        let values = arr.values().as_any().downcast_ref::<PrimitiveArray<N>>();
        for i in 0..arr.len() {
            let (start, end) = arr.offsets().start_end(i);
            out.push(match values {
                Some(v) if arr.is_valid(i) => Some(
                    (start..end)
                        .map(|j| v.is_valid(j).then(|| v.value(j)))
                        .collect(),
                ),
                _ => None,
            });
        }
    }
    out
}

/// The values of one row's list; `what` says what each value must be.
fn values<T: Copy>(
    row: &Option<Vec<Option<T>>>,
    what: &str,
    loc: impl Fn() -> Location,
) -> Result<Vec<T>> {
    let Some(row) = row else {
        return Err(Error::input("missing").at(loc()));
    };
    row.iter()
        .enumerate()
        .map(|(j, v)| {
            v.ok_or_else(|| {
                let mut at = loc();
                at.field = at.field.map(|f| format!("{f}[{j}]"));
                Error::input(format!("missing or not {what}")).at(at)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample file as another tool might write it: i64 token ids, no attention mask.
    fn foreign_parquet(path: &Path, ids: &[&[i64]]) {
        let mut input_ids = ListPrimitiveChunkedBuilder::<Int64Type>::new(
            "input_ids".into(),
            4,
            16,
            DataType::Int64,
        );
        for row in ids {
            input_ids.append_slice(row);
        }
        let labels = input_ids.finish().with_name("labels".into());
        let names: Vec<String> = (0..ids.len()).map(|i| format!("s{i}")).collect();
        let mut df = DataFrame::new(
            ids.len(),
            vec![
                Column::new("id".into(), names),
                labels.clone().with_name("input_ids".into()).into_column(),
                labels.into_column(),
            ],
        )
        .unwrap();
        let f = std::fs::File::create(path).unwrap();
        ParquetWriter::new(f).finish(&mut df).unwrap();
    }

    #[test]
    fn other_integer_types_are_read_and_the_mask_defaults_to_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        foreign_parquet(&path, &[&[1, 2, 3], &[7]]);
        let s = read_parquet(&path).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].input_ids.clone(), s[0].labels.clone()),
            (vec![1, 2, 3], vec![1, 2, 3])
        );
        assert_eq!(s[1].attention_mask, vec![1]);
    }

    #[test]
    fn a_bad_value_names_the_real_file_its_row_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        foreign_parquet(&path, &[&[1], &[4, -5]]);
        let e = read_parquet(&path).unwrap_err();
        assert!(e.is_input());
        let want = format!(
            "{}: row 1 (id `s1`): field `input_ids[1]`: missing or not a token id",
            path.display()
        );
        assert_eq!(e.to_string(), want);
        let loc = e.location().unwrap();
        assert_eq!((loc.row, loc.line), (Some(1), None));
    }

    #[test]
    fn jsonl_errors_give_line_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"input_ids\":[1],\"labels\":[1]}\n\n{\"id\":\"b\",\"input_ids\":[1,-2],\"labels\":[1,1]}\n",
        )
        .unwrap();
        let e = read_jsonl(&path).unwrap_err();
        let loc = e.location().unwrap();
        assert_eq!((loc.line, loc.row), (Some(3), Some(1)));
        assert_eq!(loc.field.as_deref(), Some("input_ids[1]"));
        assert!(
            e.to_string().starts_with(&format!(
                "{}:3 (row 1): field `input_ids[1]`: ",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_not_samples_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let mut df = DataFrame::new(1, vec![Column::new("id".into(), ["x"])]).unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let e = read_parquet(&path).unwrap_err();
        assert!(
            e.is_input() && e.to_string().contains("no `input_ids` column"),
            "{e}"
        );
    }
}
