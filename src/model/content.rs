//! Executable content and the other non-state parts of a document
//! (`<data>`, `<donedata>`, `<invoke>`), as plain enums the interpreter runs
//! with one `match`.

use std::sync::Arc;

use super::{ExprId, Position};

/// A sequence of executable content (one `<onentry>`, a transition body, ...).
pub type Block = Vec<Action>;

/// A value given either literally or by an expression (`event`/`eventexpr`).
#[derive(Clone, Debug)]
pub enum ValueSource {
    /// The literal attribute text.
    Literal(Arc<str>),
    /// An expression to evaluate.
    Expr(ExprId),
}

/// One executable content element.
#[derive(Debug)]
pub enum Action {
    /// `<raise event>`.
    Raise {
        /// Event name.
        event: Arc<str>,
    },
    /// `<send>`.
    Send(Box<SendAction>),
    /// `<cancel sendid|sendidexpr>`.
    Cancel {
        /// The send id to cancel.
        sendid: ValueSource,
    },
    /// `<log label expr>`.
    Log {
        /// Label text.
        label: Option<Arc<str>>,
        /// Value to log.
        expr: Option<ExprId>,
    },
    /// `<assign location expr|content>`.
    Assign {
        /// Location expression.
        location: ExprId,
        /// The value.
        value: AssignValue,
    },
    /// `<script>`.
    Script(ExprId),
    /// `<if>`/`<elseif>`/`<else>`: the first branch whose condition holds runs.
    If {
        /// Branches in order; the `<else>` branch has no condition.
        branches: Vec<IfBranch>,
    },
    /// `<foreach>`.
    Foreach(Box<Foreach>),
    /// An element in a foreign namespace, for the custom-action registry.
    Custom(Box<CustomAction>),
}

/// One branch of an `<if>`.
#[derive(Debug)]
pub struct IfBranch {
    /// The guard (`None` for `<else>`).
    pub cond: Option<ExprId>,
    /// The branch body.
    pub body: Block,
}

/// `<foreach array item index>`.
#[derive(Debug)]
pub struct Foreach {
    /// The array expression.
    pub array: ExprId,
    /// Variable that receives each item.
    pub item: Arc<str>,
    /// Variable that receives each index.
    pub index: Option<Arc<str>>,
    /// Loop body.
    pub body: Block,
    /// Where the element starts.
    pub position: Position,
}

/// The value side of an `<assign>`.
#[derive(Debug)]
pub enum AssignValue {
    /// `expr` attribute.
    Expr(ExprId),
    /// Inline children or text.
    Inline(InlineContent),
    /// Neither (assigns undefined).
    None,
}

/// Inline content of `<content>`, `<data>` or `<assign>`.
#[derive(Clone, Debug)]
pub struct InlineContent {
    /// The text (or serialized XML).
    pub text: Arc<str>,
    /// Whether it held element children (XML) rather than just text.
    pub is_xml: bool,
}

/// `<send>`.
#[derive(Debug)]
pub struct SendAction {
    /// `event` / `eventexpr`.
    pub event: Option<ValueSource>,
    /// `target` / `targetexpr`.
    pub target: Option<ValueSource>,
    /// `type` / `typeexpr`.
    pub type_: Option<ValueSource>,
    /// Literal `id`.
    pub id: Option<Arc<str>>,
    /// `idlocation`.
    pub idlocation: Option<ExprId>,
    /// `delay` / `delayexpr`.
    pub delay: Option<ValueSource>,
    /// `namelist` entries: name and the location expression.
    pub namelist: Vec<(Arc<str>, ExprId)>,
    /// `<param>` children.
    pub params: Vec<Param>,
    /// `<content>` child.
    pub content: Option<Content>,
    /// Where the element starts.
    pub position: Position,
}

/// `<param name expr|location>`.
#[derive(Debug, Clone)]
pub struct Param {
    /// The key.
    pub name: Arc<str>,
    /// The value expression (`expr` or `location`).
    pub expr: Option<ExprId>,
}

/// `<content expr>` or inline content.
#[derive(Debug, Clone)]
pub enum Content {
    /// `expr` attribute.
    Expr(ExprId),
    /// Inline text or XML.
    Inline(InlineContent),
}

/// `<data id src expr>` or inline.
#[derive(Debug)]
pub struct DataDecl {
    /// Variable name.
    pub id: Arc<str>,
    /// Where its value comes from.
    pub source: DataSource,
    /// Where the element starts.
    pub position: Position,
}

/// The initial value of a `<data>`.
#[derive(Debug)]
pub enum DataSource {
    /// No value (undefined).
    None,
    /// `expr`.
    Expr(ExprId),
    /// Inline content (JSON, XML or text).
    Inline(InlineContent),
    /// `src`, already loaded at parse time when it could be (or the error).
    Src {
        /// The URI as written.
        uri: Arc<str>,
        /// The loaded text, or why it could not be loaded.
        loaded: Result<Arc<str>, Arc<str>>,
    },
}

/// `<donedata>`.
#[derive(Debug)]
pub struct DoneData {
    /// `<content>`.
    pub content: Option<Content>,
    /// `<param>`s.
    pub params: Vec<Param>,
}

/// `<invoke>` (run by a host that supports it).
#[derive(Debug)]
pub struct Invoke {
    /// `type` / `typeexpr`.
    pub type_: Option<ValueSource>,
    /// `src` / `srcexpr`.
    pub src: Option<ValueSource>,
    /// Literal `id`.
    pub id: Option<Arc<str>>,
    /// `idlocation`.
    pub idlocation: Option<ExprId>,
    /// `autoforward`.
    pub autoforward: bool,
    /// `namelist`.
    pub namelist: Vec<(Arc<str>, ExprId)>,
    /// `<param>`s.
    pub params: Vec<Param>,
    /// `<content>`.
    pub content: Option<Content>,
    /// `<finalize>`: `None` when absent; an empty block for `<finalize/>`,
    /// which updates the namelist and `<param location>` variables from
    /// the child's returned data (SCXML 1.0 §6.5).
    pub finalize: Option<Block>,
    /// An inline `<content><scxml>...</scxml></content>` child, built at
    /// load time (or why it could not be).
    pub inline_document: Option<Result<Arc<super::Document>, Arc<str>>>,
    /// Where the element starts.
    pub position: Position,
}

/// An element in a namespace other than SCXML's, inside executable content.
#[derive(Debug)]
pub struct CustomAction {
    /// Namespace URI.
    pub namespace: Arc<str>,
    /// Local name.
    pub name: Arc<str>,
    /// Attributes (local name, value).
    pub attributes: Vec<(Arc<str>, Arc<str>)>,
    /// The element serialized as XML, for handlers that need children.
    pub xml: Arc<str>,
    /// Where the element starts.
    pub position: Position,
}
