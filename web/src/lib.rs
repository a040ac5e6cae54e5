//! The engine in a Web Worker (see DESIGN.md).
