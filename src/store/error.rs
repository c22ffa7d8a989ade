//! Why the store could not be written or read: the one error type of the persistence layer, kept
//! apart so that the modules that read and write files ([`super::persist`], [`super::segment`])
//! share it without depending on each other.

/// Why the store could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// File-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not one written by this version of the server.
    #[error("{path}: not a readable store file ({message})")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The version exists with other content and replacing was not asked for.
    #[error(
        "{feed} already has a release {version} made from other data ({existing}); import it under another --version, or pass --replace"
    )]
    VersionExists {
        /// Feed.
        feed: String,
        /// Version.
        version: String,
        /// The existing release's source.
        existing: String,
    },
}
