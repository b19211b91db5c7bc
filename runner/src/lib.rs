//! `unionrun`, the container runner, lives here once its issue is taken up (see
//! DESIGN.md section 5). For now the crate only holds its place in the workspace.
