//! Reading masked samples back: JSON lines, or Parquet column by column in memory.
//!
//! Sample `i` of the result is row `i` of the file (0-based, blank JSONL lines are not
//! rows), the row `gatt inspect --row i` shows and errors name. A file without `id`
//! (`gatt mask --export tokenized`, or another tool's `input_ids`/`labels` table) names
//! its samples `row-N` after their row.

use super::parquet::ParquetFile;
use super::Location;
use crate::error::{Error, Result};
use crate::mask::MaskedSample;
use polars_arrow::array::{Array, ListArray, PrimitiveArray, Utf8ViewArray};
use polars_arrow::datatypes::ArrowDataType;
use polars_arrow::offset::Offset;
use polars_arrow::types::NativeType;
use std::io::BufReader;
use std::path::Path;

#[derive(serde::Deserialize)]
struct SampleLine {
    #[serde(default)]
    id: Option<String>,
    input_ids: Vec<u32>,
    labels: Vec<i64>,
    #[serde(default)]
    attention_mask: Option<Vec<u8>>,
}

/// The id of a sample read from a file without ids: its row.
fn row_id(row: usize) -> String {
    format!("row-{row}")
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
    let f = super::open_file(path)?;
    let mut out = Vec::new();
    let mut reader = BufReader::new(f);
    let mut i = 0;
    while let Some(line) = super::jsonl::read_line(&mut reader) {
        i += 1;
        let mut line =
            line.map_err(|e| Error::io(path, "read", e).at(Location::default().at_line(i)))?;
        if i == 1 && line.starts_with('\u{feff}') {
            // A byte order mark, as Windows tools write it (see `jsonl`).
            line.drain(..'\u{feff}'.len_utf8());
        }
        if line.trim().is_empty() {
            continue;
        }
        let loc = Location::in_file(path).at_line(i).at_row(out.len());
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
        let id = s.id.unwrap_or_else(|| row_id(out.len()));
        out.push(sample(id, s.input_ids, s.labels, s.attention_mask));
    }
    Ok(out)
}

/// Masked samples of a Parquet file, read from `path` into memory.
///
/// Only the sample columns are read, straight into Arrow arrays (see [`super::parquet`]).
/// Text is accepted as `string`, `large_string` or `string_view` (an `id` may also be an
/// integer); lists as `list` or `large_list` of any integer type.
pub fn read_parquet(path: &Path) -> Result<Vec<MaskedSample>> {
    let file = || Location::in_file(path);
    let mut parquet = ParquetFile::open(path)?;
    let ids = if parquet.has("id") {
        Some(texts(path, "id", &parquet.column("id")?)?)
    } else {
        None
    };
    let mut required = |name: &str| {
        if !parquet.has(name) {
            return Err(Error::input(format!(
                "not a masked sample: no `{name}` column (a file written by `gatt mask` has \
                 input_ids and labels, and id and attention_mask unless exported as \
                 `tokenized`)"
            ))
            .at(file()));
        }
        parquet.column(name)
    };
    let input_ids = int_lists::<u32>(path, "input_ids", &required("input_ids")?)?;
    let labels = int_lists::<i64>(path, "labels", &required("labels")?)?;
    let masks = if parquet.has("attention_mask") {
        let arrays = parquet.column("attention_mask")?;
        Some(int_lists::<u8>(path, "attention_mask", &arrays)?)
    } else {
        None
    };
    let rows = input_ids.len();
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let at = |field: &str| file().at_row(row).with_field(field);
        let id = match &ids {
            Some(ids) => ids
                .get(row)
                .cloned()
                .flatten()
                .ok_or_else(|| Error::input("missing").at(at("id")))?,
            None => row_id(row),
        };
        let loc = |field: &str| at(field).with_id(id.clone());
        let ids = values(&input_ids, row, "a token id", || loc("input_ids"))?;
        let labels = values(&labels, row, "a token id or -100", || loc("labels"))?;
        let mask = match &masks {
            Some(m) => Some(values(m, row, "0 or 1", || loc("attention_mask"))?),
            None => None,
        };
        out.push(sample(id, ids, labels, mask));
    }
    Ok(out)
}

/// The rows of a text column (or an integer one, written out in decimal).
fn texts(path: &Path, name: &str, arrays: &[Box<dyn Array>]) -> Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for array in arrays {
        if let Some(a) = array.as_any().downcast_ref::<Utf8ViewArray>() {
            out.extend(a.iter().map(|v| v.map(str::to_string)));
            continue;
        }
        let Some(numbers) = int_values::<i128>(array.as_ref()) else {
            return Err(Error::input(format!(
                "not a masked sample: column `{name}` holds {}, not text",
                type_name(array.dtype())
            ))
            .at(Location::in_file(path)));
        };
        out.extend(numbers.into_iter().map(|v| v.map(|v| v.to_string())));
    }
    Ok(out)
}

/// One list per row; `None` for a missing list or a value the column type cannot hold.
type Lists<T> = Vec<Option<Vec<Option<T>>>>;

/// An integer type every Parquet integer converts to, or fails to for a value out of
/// its range.
trait Int:
    Copy
    + TryFrom<i8>
    + TryFrom<i16>
    + TryFrom<i32>
    + TryFrom<i64>
    + TryFrom<u8>
    + TryFrom<u16>
    + TryFrom<u32>
    + TryFrom<u64>
{
}

impl<T> Int for T where
    T: Copy
        + TryFrom<i8>
        + TryFrom<i16>
        + TryFrom<i32>
        + TryFrom<i64>
        + TryFrom<u8>
        + TryFrom<u16>
        + TryFrom<u32>
        + TryFrom<u64>
{
}

/// The values of an integer array as `T` (`None` where null or out of `T`'s range);
/// `None` for an array that is not of integers.
fn int_values<T: Int>(array: &dyn Array) -> Option<Vec<Option<T>>> {
    fn convert<S: NativeType, T: TryFrom<S>>(array: &dyn Array) -> Option<Vec<Option<T>>> {
        let array = array.as_any().downcast_ref::<PrimitiveArray<S>>()?;
        Some(
            array
                .iter()
                .map(|v| v.and_then(|v| T::try_from(*v).ok()))
                .collect(),
        )
    }
    match array.dtype() {
        ArrowDataType::Int8 => convert::<i8, T>(array),
        ArrowDataType::Int16 => convert::<i16, T>(array),
        ArrowDataType::Int32 => convert::<i32, T>(array),
        ArrowDataType::Int64 => convert::<i64, T>(array),
        ArrowDataType::UInt8 => convert::<u8, T>(array),
        ArrowDataType::UInt16 => convert::<u16, T>(array),
        ArrowDataType::UInt32 => convert::<u32, T>(array),
        ArrowDataType::UInt64 => convert::<u64, T>(array),
        _ => None,
    }
}

/// The rows of a list-of-integers column as `T` (a value out of `T`'s range is `None`).
fn int_lists<T: Int>(path: &Path, name: &str, arrays: &[Box<dyn Array>]) -> Result<Lists<T>> {
    let mut out = Vec::new();
    for array in arrays {
        let added = if let Some(a) = array.as_any().downcast_ref::<ListArray<i64>>() {
            list_rows(a, &mut out)
        } else if let Some(a) = array.as_any().downcast_ref::<ListArray<i32>>() {
            list_rows(a, &mut out)
        } else {
            None
        };
        if added.is_none() {
            return Err(Error::input(format!(
                "not a masked sample: column `{name}` holds {}, not lists of integers",
                type_name(array.dtype())
            ))
            .at(Location::in_file(path)));
        }
    }
    Ok(out)
}

/// Appends the rows of `list` to `out`; `None` when its values are not integers.
fn list_rows<O: Offset, T: Int>(list: &ListArray<O>, out: &mut Lists<T>) -> Option<()> {
    let values = int_values::<T>(list.values().as_ref())?;
    for i in 0..list.len() {
        let (start, end) = list.offsets().start_end(i);
        out.push(
            list.is_valid(i)
                .then(|| values.get(start..end).map(<[_]>::to_vec))
                .flatten(),
        );
    }
    Some(())
}

/// A short name of an Arrow type for messages: `string`, `list<int64>`, `float64`.
fn type_name(dtype: &ArrowDataType) -> String {
    use ArrowDataType as D;
    match dtype {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "binary".into(),
        D::Boolean => "bool".into(),
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => {
            format!("list<{}>", type_name(&f.dtype))
        }
        D::Struct(_) => "struct".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The values of row `row`'s list; `what` says what each value must be.
fn values<T: Copy>(
    lists: &Lists<T>,
    row: usize,
    what: &str,
    loc: impl Fn() -> Location,
) -> Result<Vec<T>> {
    let Some(row) = lists.get(row).and_then(Option::as_ref) else {
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
    use polars::prelude::*;

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
    fn a_file_without_ids_names_its_samples_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        foreign_parquet(&path, &[&[1, 2], &[3]]);
        let mut df = ParquetReader::new(std::fs::File::open(&path).unwrap())
            .finish()
            .unwrap()
            .drop("id")
            .unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let s = read_parquet(&path).unwrap();
        assert_eq!((s[0].id.as_str(), s[1].id.as_str()), ("row-0", "row-1"));
        assert_eq!(s[1].input_ids, vec![3]);
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"input_ids\":[5],\"labels\":[-100]}\n").unwrap();
        assert_eq!(read_jsonl(&path).unwrap()[0].id, "row-0");
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
