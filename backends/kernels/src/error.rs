//! Why a weight tensor cannot be repacked.

/// A weight tensor that does not fit its block type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The row width is not a multiple of the type's block size.
    #[error("{ty}: a row of {cols} values is not a whole number of {block}-value blocks")]
    Width {
        /// The block type.
        ty: &'static str,
        /// The row width.
        cols: usize,
        /// Values per block.
        block: usize,
    },
    /// The data is not `rows × blocks per row` whole blocks.
    #[error("{ty}: {got} bytes of data for [{rows}, {cols}], which needs {want}")]
    Length {
        /// The block type.
        ty: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        want: usize,
    },
}
