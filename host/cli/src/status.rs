//! `weir status` and `weir top`: a running pipeline's job graph, figures
//! and bottleneck, in the terminal, drawn by [`weir_pipeline::report`].

pub use weir_pipeline::report::status_lines as render;
