//! The schema of every operation and stack option Darkroom understands, as static data.
//!
//! This table is the single source of truth for three things: the documents served by
//! `GET /operations` and `GET /stackoptions` (rendered with [`operations_json`] and
//! [`stack_options_json`] in the shapes rokka clients know), the validation of stack bodies at
//! creation (`stack.rs`), and the coercion of render-URL strings into typed values during
//! resolution (`resolve.rs`). Keeping them in one place means a range the API advertises is
//! exactly the range it enforces.
//!
//! Values are normalised while they are coerced: integers stay JSON integers (`200`, `"200"` and
//! `200.0` all become `200`), numbers that happen to be integral become integers too, colours
//! become six upper-case hex digits, enumerations take their listed spelling. This is what makes
//! the canonical form of a resolved pipeline stable across equivalent URLs.
//!
//! Where rokka's documentation and its recorded 2019 API disagree, the API value is used: the API
//! is what existing clients were tested against, and `GET /operations` then advertises the very
//! values that are enforced. Each such choice carries a comment at its entry.

use serde_json::{Map, Number, Value};

/// Why a value, an option or an operation was refused. The text names the field
/// (`resize.width`, `jpg.quality`) so that it can be shown to the client as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The operation name is not one Darkroom renders.
    #[error("unknown operation `{0}`")]
    UnknownOperation(String),
    /// The option does not exist for this operation, or is not a stack option.
    #[error("{field}: unknown option")]
    UnknownOption {
        /// `operation.option` or the stack option name.
        field: String,
    },
    /// The value has the wrong type, is out of range or does not match the allowed values.
    #[error("{field}: {reason}")]
    InvalidValue {
        /// `operation.option` or the stack option name.
        field: String,
        /// What is wrong, e.g. `10001 is above the maximum 10000`.
        reason: String,
    },
    /// A rule across several options of one operation or of the stack options is broken.
    #[error("{subject}: {reason}")]
    Rule {
        /// The operation name or the stack option the rule is about.
        subject: String,
        /// What is missing or conflicting.
        reason: String,
    },
}

/// A pattern a text option must match. The regular expression is only advertised in the
/// JSON documents; matching is done by hand so that the crate needs no regex engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `auto`, `smart`, `face`, `subjectarea`, `croparea`, or `{X}_{Y}` / `{X}-{Y}` with X in
    /// left/center/right/pixels and Y in top/center/bottom/pixels (pixels 0–10000).
    Anchor,
    /// A named area of the `multi_areas` metadata: letters, digits and underscores.
    AreaName,
    /// A stack name as accepted by [`crate::model::stack::validate_stack_name`].
    StackName,
    /// An absolute `http://` or `https://` URL prefix.
    HttpUrl,
    /// A video timestamp `hh:mm:ss` (optionally with fractional seconds).
    Timestamp,
    /// A full or short source-image hash: 6–40 lower-case hex digits.
    ImageHash,
}

impl Pattern {
    /// The regular expression advertised in the JSON documents.
    pub fn regex(self) -> &'static str {
        match self {
            // The 2019 API pattern, kept byte for byte because clients may display it.
            Pattern::Anchor => {
                "\\b(subjectarea|smart|face|auto|croparea|((center|left|right|(0|[1-9][0-9]{0,3}|10000))[_-](center|top|bottom|(0|[1-9][0-9]{0,3}|10000))))\\b"
            }
            Pattern::AreaName => "^[a-zA-Z0-9_]+$",
            // rokka advertises `[a-z0-9\-_]+`; Darkroom also accepts upper-case stack names
            // (see `validate_stack_name`), so the advertised pattern says so.
            Pattern::StackName => "^[a-zA-Z0-9\\-_]+$",
            Pattern::HttpUrl => "^https?://",
            Pattern::Timestamp => "^[0-9]{1,2}:[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?$",
            Pattern::ImageHash => "^[0-9a-f]{6,40}$",
        }
    }

    /// Whether the whole of `s` matches the pattern. Anchors are matched completely, not
    /// just at a word boundary as the advertised expression would allow.
    pub fn matches(self, s: &str) -> bool {
        match self {
            Pattern::Anchor => is_anchor(s),
            Pattern::AreaName => {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
            Pattern::StackName => {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
            Pattern::HttpUrl => s.starts_with("http://") || s.starts_with("https://"),
            Pattern::Timestamp => is_timestamp(s),
            Pattern::ImageHash => {
                (6..=40).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
        }
    }
}

fn is_anchor(s: &str) -> bool {
    if matches!(s, "subjectarea" | "smart" | "face" | "auto" | "croparea") {
        return true;
    }
    let Some((x, y)) = s.split_once(['_', '-']) else {
        return false;
    };
    let pixels = |p: &str| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0'))
            && p.parse::<u32>().is_ok_and(|n| n <= 10_000)
    };
    (matches!(x, "left" | "center" | "right") || pixels(x))
        && (matches!(y, "top" | "center" | "bottom") || pixels(y))
}

fn is_timestamp(s: &str) -> bool {
    let (clock, fraction) = match s.split_once('.') {
        Some((c, f)) => (c, Some(f)),
        None => (s, None),
    };
    if let Some(f) = fraction {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return false;
    };
    let two_digits_below_60 =
        |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) && p < "60";
    (1..=2).contains(&h.len())
        && h.bytes().all(|b| b.is_ascii_digit())
        && two_digits_below_60(m)
        && two_digits_below_60(sec)
}

/// The type of an option and what it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number within `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A finite number within `min..=max`; integral values are kept as integers.
    Number {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// `true`/`false` (also `"true"`, `"false"`, `1`, `0`, `"1"`, `"0"`).
    Boolean,
    /// Free text, optionally restricted by a pattern.
    Text(Option<Pattern>),
    /// A hex colour without `#`: six digits, or three as a shorthand; stored as six upper-case digits.
    Color,
    /// One of a fixed list of words.
    Choice(&'static [&'static str]),
    /// A comma-separated list of words from a fixed list (a JSON array of them is accepted too);
    /// stored sorted and without duplicates.
    ChoiceList(&'static [&'static str]),
    /// A JSON array of strings (a single string is accepted as a one-element list).
    TextList,
}

/// The default of an option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    /// No default: the option is absent unless given.
    None,
    /// Advertised as `"default": null`; like [`DefaultValue::None`], the option stays absent.
    Null,
    /// A boolean default.
    Bool(bool),
    /// An integer default.
    Int(i64),
    /// A number default.
    Num(f64),
    /// A text default.
    Str(&'static str),
}

impl DefaultValue {
    /// The value filled in when the option is not given; `None` when the option stays absent.
    pub fn value(self) -> Option<Value> {
        match self {
            DefaultValue::None | DefaultValue::Null => None,
            DefaultValue::Bool(b) => Some(Value::Bool(b)),
            DefaultValue::Int(i) => Some(Value::from(i)),
            DefaultValue::Num(f) => Some(number_value(f)),
            DefaultValue::Str(s) => Some(Value::from(s)),
        }
    }

    fn json(self) -> Option<Value> {
        match self {
            DefaultValue::None => None,
            DefaultValue::Null => Some(Value::Null),
            other => other.value(),
        }
    }
}

/// One option of an operation, or one stack option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionSpec {
    /// The option name as written in stacks and URLs.
    pub name: &'static str,
    /// What the option accepts.
    pub kind: Kind,
    /// Its default.
    pub default: DefaultValue,
    /// Advertised as `["<type>","null"]`, as rokka does for optional stack options.
    pub nullable: bool,
    /// Human-readable description, served as is.
    pub description: &'static str,
}

/// Which options an operation cannot do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing is required.
    None,
    /// Every listed option is required (`"required"` in the JSON document).
    All(&'static [&'static str]),
    /// At least one of the listed options is required (`"oneOf"` in the JSON document).
    AnyOf(&'static [&'static str]),
}

/// One operation: its options (besides `enabled`, which every operation has) and requirements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperationSpec {
    /// The operation name.
    pub name: &'static str,
    /// Human-readable description, served as is.
    pub description: &'static str,
    /// The operation's own options.
    pub options: &'static [OptionSpec],
    /// What must be given.
    pub requirement: Requirement,
}

impl OperationSpec {
    /// The option of that name, including the `enabled` option every operation has.
    pub fn option(&self, name: &str) -> Option<&'static OptionSpec> {
        if name == ENABLED.name {
            return Some(&ENABLED);
        }
        self.options.iter().find(|o| o.name == name)
    }

    /// All options in the order they are advertised (`enabled` last, as rokka lists it).
    pub fn all_options(&self) -> impl Iterator<Item = &'static OptionSpec> {
        self.options.iter().chain(std::iter::once(&ENABLED))
    }
}

const fn opt(
    name: &'static str,
    kind: Kind,
    default: DefaultValue,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        default,
        nullable: false,
        description,
    }
}

const fn nullable(
    name: &'static str,
    kind: Kind,
    default: DefaultValue,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        default,
        nullable: true,
        description,
    }
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Integer { min, max }
}

const fn num(min: f64, max: f64) -> Kind {
    Kind::Number { min, max }
}

/// The option every operation accepts: `false` skips the operation.
pub static ENABLED: OptionSpec = opt(
    "enabled",
    Kind::Boolean,
    DefaultValue::Bool(true),
    "If set to false, will not use this operation for rendering.",
);

const RESIZE_MODES: &[&str] = &["box", "absolute", "fill"];
const COLOR_HINT: &str =
    "in hex without the # sign, example: \"0F0F0F\" (three digits are accepted as a shorthand)";

static RESIZE: &[OptionSpec] = &[
    opt("width", int(1, 10_000), DefaultValue::None, "Width of resize."),
    opt("height", int(1, 10_000), DefaultValue::None, "Height of resize."),
    opt(
        "mode",
        Kind::Choice(RESIZE_MODES),
        DefaultValue::Str("box"),
        "Mode of resizing operation: box fits inside, absolute ignores the aspect ratio, fill covers the box.",
    ),
    opt(
        "upscale",
        Kind::Boolean,
        DefaultValue::Bool(true),
        "Allow the resulting image to be bigger than the original one.",
    ),
    opt(
        "upscale_dpr",
        Kind::Boolean,
        DefaultValue::Bool(true),
        "With the dpr stack option set, allow the resulting image to be \"dpr\" times bigger than the original one, even if \"upscale\" is false.",
    ),
    opt(
        "sharpen",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Sharpen the image when it is downsized and looks like a photograph.",
    ),
];

static CROP: &[OptionSpec] = &[
    // Docs allow up to 99999; the API enforces 10000, like every other dimension.
    opt(
        "width",
        int(1, 10_000),
        DefaultValue::None,
        "Width to which the image will be cropped.",
    ),
    opt(
        "height",
        int(1, 10_000),
        DefaultValue::None,
        "Height to which the image will be cropped.",
    ),
    opt(
        "anchor",
        Kind::Text(Some(Pattern::Anchor)),
        DefaultValue::Str("auto"),
        "Anchor from where to crop from: {X}_{Y} with X left/center/right/pixels and Y top/center/bottom/pixels, or auto, smart, subjectarea, croparea, face.",
    ),
    opt(
        "fallback",
        Kind::Text(Some(Pattern::Anchor)),
        DefaultValue::Str("center_center"),
        "Anchor fallback to use, when no subject area could be found.",
    ),
    // The 2019 API lists absolute and ratio only; the documentation adds box and area
    // (cropping on a subject area), and nothing contradicts them, so all four are accepted.
    opt(
        "mode",
        Kind::Choice(&["absolute", "ratio", "box", "area"]),
        DefaultValue::Str("absolute"),
        "If width and height are absolute values, a ratio, or (box, area) taken from a subject area.",
    ),
    opt(
        "scale",
        num(0.0, 100.0),
        DefaultValue::Int(100),
        "Scales the crop box down to the specified percentage. Use mainly with the ratio mode.",
    ),
    opt(
        "movearea_x",
        num(-100.0, 100.0),
        DefaultValue::Int(0),
        "Moves the subject area horizontally by this percentage.",
    ),
    opt(
        "movearea_y",
        num(-100.0, 100.0),
        DefaultValue::Int(0),
        "Moves the subject area vertically by this percentage.",
    ),
    opt(
        "area",
        Kind::Text(Some(Pattern::AreaName)),
        DefaultValue::Null,
        "If a special area per image should taken for subject or crop area.",
    ),
];

static ROTATE: &[OptionSpec] = &[
    // Docs allow -360..360; the API enforces 0..360 (a negative angle is the same turn plus 360).
    opt(
        "angle",
        num(0.0, 360.0),
        DefaultValue::None,
        "Clockwise rotation angle of the image. Can be fractional, example: \"120.3\"",
    ),
    opt(
        "background_color",
        Kind::Color,
        DefaultValue::Str("FFFFFF"),
        "Color to use in background, in hex without the # sign.",
    ),
    opt(
        "background_opacity",
        num(0.0, 100.0),
        DefaultValue::Int(0),
        "Opacity of background. Default is 0, transparent. Goes up to 100 for opaque.",
    ),
];

static AUTOROTATE: &[OptionSpec] = &[
    opt(
        "width",
        int(1, 10_000),
        DefaultValue::None,
        "Width of box to rotate to fit.",
    ),
    opt(
        "height",
        int(1, 10_000),
        DefaultValue::None,
        "Height of box to rotate to fit.",
    ),
    opt(
        "rotation_direction",
        Kind::Choice(&["clockwise", "counterclockwise"]),
        DefaultValue::None,
        "Direction of rotation if we rotate. Clockwise or counterclockwise.",
    ),
];

static BLUR: &[OptionSpec] = &[
    opt(
        "sigma",
        num(0.0, 100.0),
        DefaultValue::Int(4),
        "Affects how blurred the image is.",
    ),
    opt(
        "radius",
        int(0, 500),
        DefaultValue::Int(0),
        "Deprecated; accepted for compatibility. The blur is controlled by sigma.",
    ),
];

static DROPSHADOW: &[OptionSpec] = &[
    opt(
        "horizontal",
        int(-100, 100),
        DefaultValue::Int(0),
        "Horizontal offset of shadow.",
    ),
    opt(
        "vertical",
        int(-100, 100),
        DefaultValue::Int(0),
        "Vertical offset of shadow.",
    ),
    // Docs say the default is 0 (an invisible shadow); the API defaults to 100, which is what
    // makes a bare `dropshadow` do something.
    opt(
        "opacity",
        int(0, 100),
        DefaultValue::Int(100),
        "Opacity of shadow, from 0 (transparent) up to 100 (opaque).",
    ),
    opt(
        "sigma",
        num(0.0, 10_000.0),
        DefaultValue::Num(0.5),
        "Sigma controls the fuzziness of the shadow within the radius. Small values like 0.5 work best for good results.",
    ),
    opt(
        "blur_radius",
        num(0.0, 10_000.0),
        DefaultValue::Int(0),
        "Radius of edge blurring, controls how far it can spread. In pixels.",
    ),
    opt(
        "color",
        Kind::Color,
        DefaultValue::Str("000000"),
        "Color to use for shadow, in hex without the # sign.",
    ),
];

static TRIM: &[OptionSpec] = &[opt(
    "fuzzy",
    num(0.0, 100.0),
    DefaultValue::Int(0),
    "How fuzzy the color look up is to remove as background. The value 0 is a good default for clear images.",
)];

static ALPHA: &[OptionSpec] = &[
    opt(
        "mode",
        Kind::Choice(&["mask", "extract", "remove", "apply"]),
        DefaultValue::Str("mask"),
        "Mode of alpha operation: mask, extract, remove, or apply (with opacity).",
    ),
    opt(
        "opacity",
        int(0, 100),
        DefaultValue::Int(50),
        "Opacity for mode \"apply\", from 0 up to 100 for opaque.",
    ),
];

static COMPOSITION: &[OptionSpec] = &[
    opt(
        "mode",
        Kind::Choice(&["foreground", "background"]),
        DefaultValue::None,
        "Whether the initial image goes in front of (foreground) or behind (background) the secondary image.",
    ),
    opt(
        "width",
        int(1, 10_000),
        DefaultValue::None,
        "Width of the composed image.",
    ),
    opt(
        "height",
        int(1, 10_000),
        DefaultValue::None,
        "Height of the composed image.",
    ),
    opt(
        "resize_mode",
        Kind::Choice(RESIZE_MODES),
        DefaultValue::Str("box"),
        "Mode of resizing the secondary image, as in the resize operation.",
    ),
    opt(
        "resize_to_primary",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Resize the secondary image to the width and height of the primary image.",
    ),
    // Docs say center_center; the API default is auto (subject area, then face, then centre).
    opt(
        "anchor",
        Kind::Text(Some(Pattern::Anchor)),
        DefaultValue::Str("auto"),
        "Anchor where to place the composition, as in the crop operation.",
    ),
    opt(
        "secondary_color",
        Kind::Color,
        DefaultValue::Str("000000"),
        "Color to use as filler, in hex without the # sign.",
    ),
    opt(
        "secondary_opacity",
        int(0, 100),
        DefaultValue::Int(100),
        "Opacity of the filler, from 0 (transparent) up to 100 (opaque).",
    ),
    opt(
        "secondary_image",
        Kind::Text(Some(Pattern::ImageHash)),
        DefaultValue::Null,
        "Hash of the image to use as the secondary image.",
    ),
    opt(
        "secondary_stack",
        Kind::Text(Some(Pattern::StackName)),
        DefaultValue::Null,
        "Name of a stack to render the secondary image with.",
    ),
    opt(
        "secondary_stack_variables",
        Kind::Text(None),
        DefaultValue::Null,
        "Stack variables for the secondary stack, encoded as URL query parameters.",
    ),
    opt(
        "angle",
        num(-360.0, 360.0),
        DefaultValue::Int(0),
        "Rotate the secondary image by degrees.",
    ),
];

static MODULATE: &[OptionSpec] = &[
    opt(
        "brightness",
        int(0, 500),
        DefaultValue::Int(100),
        "Brightness adjustments in %, 100 means no adjustments.",
    ),
    opt(
        "saturation",
        int(0, 500),
        DefaultValue::Int(100),
        "Saturation adjustments in %, 100 means no adjustments.",
    ),
    opt(
        "hue",
        int(0, 360),
        DefaultValue::Int(0),
        "Hue adjustments in degrees, 0 means no adjustments, 180 means to opposite color on the color wheel.",
    ),
];

static MULTIPLY: &[OptionSpec] = &[
    opt(
        "factor",
        num(0.0, 1.0),
        DefaultValue::Num(0.96),
        "The factor to multiply the image with, between 0 and 1.",
    ),
    opt(
        "factor_color",
        Kind::Color,
        DefaultValue::Null,
        "Multiply by this color in hex without the # sign; takes precedence over factor.",
    ),
];

// rokka publishes no ranges for sharpen. The bounds below are libvips' for the slopes and
// thresholds; sigma is capped like blur's because the kernel grows with it and the value comes
// from untrusted URLs.
static SHARPEN: &[OptionSpec] = &[
    opt(
        "m1",
        num(0.0, 1_000_000.0),
        DefaultValue::Num(0.4),
        "Slope for jaggy areas.",
    ),
    opt(
        "m2",
        num(0.0, 1_000_000.0),
        DefaultValue::Num(0.8),
        "Slope for flat areas.",
    ),
    opt(
        "sigma",
        num(0.0, 100.0),
        DefaultValue::Num(0.7),
        "Sigma of the gaussian.",
    ),
    opt(
        "x1",
        num(0.0, 1_000_000.0),
        DefaultValue::Num(2.0),
        "Flat/jaggy threshold.",
    ),
    opt(
        "y2",
        num(0.0, 1_000_000.0),
        DefaultValue::Num(10.0),
        "Maximum amount of brightening.",
    ),
    opt(
        "y3",
        num(0.0, 1_000_000.0),
        DefaultValue::Num(20.0),
        "Maximum amount of darkening.",
    ),
];

static TEXT: &[OptionSpec] = &[
    opt(
        "font",
        Kind::Text(Some(Pattern::ImageHash)),
        DefaultValue::None,
        "Hash of an uploaded TrueType or OpenType font of the same organization.",
    ),
    opt(
        "text",
        Kind::Text(None),
        DefaultValue::None,
        "The text to draw (UTF-8; a line break starts a new line).",
    ),
    opt(
        "size",
        num(1.0, 2000.0),
        DefaultValue::Int(16),
        "Font size in pixels.",
    ),
    opt(
        "color",
        Kind::Color,
        DefaultValue::Str("000000"),
        "Text colour in hex without the # sign.",
    ),
    opt(
        "opacity",
        int(0, 100),
        DefaultValue::Int(100),
        "Opacity of the text, from 0 (transparent) up to 100 (opaque).",
    ),
    opt(
        "angle",
        num(-360.0, 360.0),
        DefaultValue::Int(0),
        "Rotates the text block clockwise by degrees, around its centre.",
    ),
    opt(
        "anchor",
        Kind::Text(Some(Pattern::Anchor)),
        DefaultValue::Str("center_center"),
        "Where to place the text block on the image: {X}_{Y} with X left/center/right/pixels and Y top/center/bottom/pixels.",
    ),
    opt(
        "width",
        int(1, 10_000),
        DefaultValue::None,
        "Width of the text box; longer lines are wrapped.",
    ),
    opt(
        "height",
        int(1, 10_000),
        DefaultValue::None,
        "Height of the text box; lines below it are cut off.",
    ),
    opt(
        "spacing",
        num(-1000.0, 1000.0),
        DefaultValue::Int(0),
        "Extra space between lines in pixels.",
    ),
    opt(
        "align",
        Kind::Choice(&["left", "centre", "center", "right"]),
        DefaultValue::Str("left"),
        "Alignment of the lines within the text block.",
    ),
    opt(
        "resize_to_box",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Chooses the font size so that the text fills the width/height box.",
    ),
];

/// Every operation Darkroom renders, in the order `GET /operations` lists them.
pub static OPERATIONS: &[OperationSpec] = &[
    OperationSpec {
        name: "resize",
        description: "Resizes an image.",
        options: RESIZE,
        requirement: Requirement::AnyOf(&["width", "height"]),
    },
    OperationSpec {
        name: "crop",
        description: "Crops an image to a set size.",
        options: CROP,
        requirement: Requirement::All(&["width", "height"]),
    },
    OperationSpec {
        name: "rotate",
        description: "Rotates an image clockwise.",
        options: ROTATE,
        requirement: Requirement::All(&["angle"]),
    },
    OperationSpec {
        name: "autorotate",
        description: "Rotates the image to its EXIF orientation, or to match the aspect of the given box.",
        options: AUTOROTATE,
        requirement: Requirement::None,
    },
    // The 2019 API marks sigma as required while also giving it a default of 4; with the default
    // the requirement can never fail, so it is not advertised.
    OperationSpec {
        name: "blur",
        description: "Blurs the entire image.",
        options: BLUR,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "dropshadow",
        description: "Adds a dropshadow to an image.",
        options: DROPSHADOW,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "trim",
        description: "Trims edges that are the background color from an image.",
        options: TRIM,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "grayscale",
        description: "Converts an image to grayscale.",
        options: &[],
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "sepia",
        description: "Applies sepia toning to an image.",
        options: &[],
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "noop",
        description: "Deprecated! Use an empty stack operations collection to get the same behaviour",
        options: &[],
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "alpha",
        description: "Does operations with the alpha (transparency) channel of an image.",
        options: ALPHA,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "composition",
        description: "Merges the image with a secondary image or a coloured box; the result is never smaller than the image.",
        options: COMPOSITION,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "modulate",
        description: "Modulates an image for brightness, saturation and hue.",
        options: MODULATE,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "multiply",
        description: "Multiplies an image with a factor or a colour. Can be used to darken an image.",
        options: MULTIPLY,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "sharpen",
        description: "Sharpens an image (libvips sharpen semantics).",
        options: SHARPEN,
        requirement: Requirement::None,
    },
    OperationSpec {
        name: "text",
        description: "Draws text in an uploaded font onto the image.",
        options: TEXT,
        requirement: Requirement::All(&["font", "text"]),
    },
    OperationSpec {
        name: "circlemask",
        description: "Makes everything outside the largest inscribed circle transparent.",
        options: &[],
        requirement: Requirement::None,
    },
];

const QUALITY: Kind = int(1, 100);
const NO_VIDEO: &str =
    "Accepted for compatibility; Darkroom does not render video, so this has no effect.";
const NO_REMOTE: &str =
    "Accepted for compatibility; Darkroom does not fetch remote images, so this has no effect.";

/// Values of `autoformat.exclude`.
pub const AUTOFORMAT_EXCLUDES: &[&str] = &[
    "webp",
    "avif",
    "lossless_to_lossy",
    "lossy_to_lossless",
    "lossy_to_lossless_if_bigger",
    "svg",
    "svg_to_png",
];

/// Every stack option, in the order `GET /stackoptions` lists them.
pub static STACK_OPTIONS: &[OptionSpec] = &[
    nullable(
        "basestack",
        Kind::Text(Some(Pattern::StackName)),
        DefaultValue::Null,
        "Name of a stack whose operations run first and whose options this stack extends.",
    ),
    opt(
        "jpg.quality",
        QUALITY,
        DefaultValue::Int(80),
        "JPEG quality. Defaults to 10 less when dpr is above 1.5.",
    ),
    opt(
        "webp.quality",
        QUALITY,
        DefaultValue::Int(80),
        "WebP quality; 100 means lossless. Defaults to 10 less when dpr is above 1.5.",
    ),
    // Absent from the 2019 API; the documented default is used.
    opt("avif.quality", QUALITY, DefaultValue::Int(45), "AVIF quality."),
    // Docs say 70; the 2019 API says 60.
    opt(
        "gif.quality",
        QUALITY,
        DefaultValue::Int(60),
        "GIF optimisation quality; 100 is lossless.",
    ),
    opt(
        "png.compression_level",
        int(0, 9),
        DefaultValue::Int(7),
        "PNG compression level.",
    ),
    // Docs say 5; the 2019 API says 4.
    opt(
        "optim.quality",
        int(0, 10),
        DefaultValue::Int(4),
        "Accepted for compatibility: renders are encoded once at their quality option and never optimised later, so one URL always answers the same bytes.",
    ),
    opt(
        "optim.disable_all",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Accepted for compatibility: no optimisation step runs after encoding, so one URL always answers the same bytes.",
    ),
    opt(
        "optim.immediate",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Accepted for compatibility; Darkroom always finishes a render before serving it.",
    ),
    opt(
        "optim.ttl_shared",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Accepted for compatibility; has no effect.",
    ),
    opt(
        "autoformat",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Deliver WebP (or AVIF when included) instead of JPEG or PNG when the browser accepts it.",
    ),
    nullable(
        "autoformat.exclude",
        Kind::ChoiceList(AUTOFORMAT_EXCLUDES),
        DefaultValue::Null,
        "Comma-separated formats or switches autoformat must not use: webp, avif, lossless_to_lossy, lossy_to_lossless, lossy_to_lossless_if_bigger, svg, svg_to_png.",
    ),
    nullable(
        "autoformat.include",
        Kind::ChoiceList(&["avif"]),
        DefaultValue::Null,
        "Formats autoformat may additionally use: avif.",
    ),
    opt(
        "dpr",
        num(1.0, 10.0),
        DefaultValue::Int(1),
        "Device pixel ratio: multiplies the dimensions of resize operations. Needs a resize operation in the stack.",
    ),
    opt(
        "content_disposition",
        Kind::Choice(&["inline", "attachment"]),
        DefaultValue::Str("inline"),
        "Content-Disposition of the rendered image.",
    ),
    opt(
        "source_file",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Deliver the original bytes; requires no operations and no other options.",
    ),
    opt(
        "transparency.color",
        Kind::Color,
        DefaultValue::None,
        "Flatten transparency onto this colour in every output format, in hex without the # sign.",
    ),
    opt(
        "jpg.transparency.color",
        Kind::Color,
        DefaultValue::Str("FFFFFF"),
        "Colour transparent areas get in JPEG output, in hex without the # sign.",
    ),
    opt(
        "jpg.transparency.autoformat",
        Kind::Choice(&["true", "false", "png", "webp"]),
        DefaultValue::Str("false"),
        "Deliver a format with transparency when a JPEG render would have visible transparency.",
    ),
    opt(
        "jpg.transparency.convert",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Deliver PNG instead of JPEG when the render has visible transparency.",
    ),
    opt(
        "protected",
        Kind::Boolean,
        DefaultValue::Bool(false),
        "Renders of this stack need a signed URL.",
    ),
    opt(
        "interlacing.mode",
        Kind::Choice(&["none", "line", "plane", "partition"]),
        DefaultValue::Str("plane"),
        "Interlacing of the output: none writes baseline JPEG; line, plane and partition write progressive JPEG. PNG and GIF outputs are not interlaced; asking for it explicitly for them is refused.",
    ),
    opt(
        "pngquant.quality",
        int(10, 100),
        DefaultValue::Int(98),
        "Accepted for compatibility; Darkroom has no lossy PNG step, so this has no effect.",
    ),
    opt(
        "heif.quality",
        QUALITY,
        DefaultValue::Int(40),
        "Accepted for compatibility; Darkroom does not output HEIF.",
    ),
    opt(
        "jxl.quality",
        QUALITY,
        DefaultValue::Int(70),
        "Accepted for compatibility; Darkroom does not output JPEG XL.",
    ),
    opt(
        "jp2.quality",
        QUALITY,
        DefaultValue::Int(40),
        "Accepted for compatibility; Darkroom does not output JPEG 2000.",
    ),
    // Docs say 70; the 2019 API says 50.
    opt("av1.quality", QUALITY, DefaultValue::Int(50), NO_VIDEO),
    opt("webm.quality", QUALITY, DefaultValue::Int(50), NO_VIDEO),
    opt("mp4.quality", QUALITY, DefaultValue::Int(50), NO_VIDEO),
    nullable(
        "timestamp",
        Kind::Text(Some(Pattern::Timestamp)),
        DefaultValue::Null,
        NO_VIDEO,
    ),
    opt("fps", int(1, 25), DefaultValue::Int(10), NO_VIDEO),
    opt("min_video_width", int(0, 6000), DefaultValue::None, NO_VIDEO),
    opt("min_video_height", int(0, 2200), DefaultValue::None, NO_VIDEO),
    opt(
        "dpi",
        int(10, 5000),
        DefaultValue::None,
        "Accepted for compatibility; has no effect.",
    ),
    opt(
        "pdf.dpi",
        int(10, 1000),
        DefaultValue::Int(200),
        "Accepted for compatibility; Darkroom does not render PDF.",
    ),
    opt(
        "pdf.page",
        int(1, 1000),
        DefaultValue::Int(1),
        "Accepted for compatibility; Darkroom does not render PDF.",
    ),
    nullable(
        "remote_fullurl_allow",
        Kind::Boolean,
        DefaultValue::Null,
        NO_REMOTE,
    ),
    opt(
        "remote_fullurl_whitelist",
        Kind::TextList,
        DefaultValue::Null,
        NO_REMOTE,
    ),
    nullable(
        "remote_basepath",
        Kind::Text(Some(Pattern::HttpUrl)),
        DefaultValue::Null,
        NO_REMOTE,
    ),
    nullable(
        "timing_origin",
        Kind::Boolean,
        DefaultValue::Null,
        "Accepted for compatibility; has no effect.",
    ),
];

/// Short names accepted for stack options, mapped to their full name. `o-af-1` (autoformat on)
/// is widespread in rokka integrations.
pub const STACK_OPTION_ALIASES: &[(&str, &str)] = &[("af", "autoformat")];

/// The operation of that name.
pub fn operation(name: &str) -> Option<&'static OperationSpec> {
    OPERATIONS.iter().find(|o| o.name == name)
}

/// The stack option of that name or alias.
pub fn stack_option(name: &str) -> Option<&'static OptionSpec> {
    let name = STACK_OPTION_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, full)| full);
    STACK_OPTIONS.iter().find(|o| o.name == name)
}

/// The body of `GET /operations`.
pub fn operations_json() -> Value {
    let mut out = Map::new();
    for op in OPERATIONS {
        let mut properties = Map::new();
        for o in op.all_options() {
            properties.insert(o.name.to_owned(), option_json(o));
        }
        let mut entry = Map::new();
        entry.insert("properties".into(), Value::Object(properties));
        let (required, one_of): (&[&str], Option<&[&str]>) = match op.requirement {
            Requirement::None => (&[], None),
            Requirement::All(names) => (names, None),
            Requirement::AnyOf(names) => (&[], Some(names)),
        };
        entry.insert("required".into(), Value::from(required.to_vec()));
        if let Some(names) = one_of {
            entry.insert("oneOf".into(), Value::from(names.to_vec()));
        }
        entry.insert("description".into(), Value::from(op.description));
        out.insert(op.name.to_owned(), Value::Object(entry));
    }
    Value::Object(out)
}

/// The body of `GET /stackoptions`.
pub fn stack_options_json() -> Value {
    let properties: Map<String, Value> = STACK_OPTIONS
        .iter()
        .map(|o| (o.name.to_owned(), option_json(o)))
        .collect();
    let mut out = Map::new();
    out.insert("properties".into(), Value::Object(properties));
    Value::Object(out)
}

fn option_json(o: &OptionSpec) -> Value {
    let mut m = Map::new();
    let type_name = match o.kind {
        Kind::Integer { .. } => "integer",
        Kind::Number { .. } => "number",
        Kind::Boolean => "boolean",
        Kind::TextList => "array",
        Kind::Text(_) | Kind::Color | Kind::Choice(_) | Kind::ChoiceList(_) => "string",
    };
    let ty = if o.nullable {
        Value::from(vec![type_name, "null"])
    } else {
        Value::from(type_name)
    };
    m.insert("type".into(), ty);
    match o.kind {
        Kind::Integer { min, max } => {
            m.insert("minimum".into(), Value::from(min));
            m.insert("maximum".into(), Value::from(max));
        }
        Kind::Number { min, max } => {
            m.insert("minimum".into(), number_value(min));
            m.insert("maximum".into(), number_value(max));
        }
        _ => {}
    }
    if let Some(d) = o.default.json() {
        m.insert("default".into(), d);
    }
    match o.kind {
        Kind::Choice(values) => {
            m.insert("values".into(), Value::from(values.to_vec()));
        }
        Kind::Text(Some(p)) => {
            m.insert("pattern".into(), Value::from(p.regex()));
        }
        Kind::Color => {
            m.insert("pattern".into(), Value::from("[0-9a-fA-F]{6}"));
        }
        Kind::TextList => {
            let mut items = Map::new();
            items.insert("type".into(), Value::from("string"));
            m.insert("items".into(), Value::Object(items));
        }
        _ => {}
    }
    let description = if o.kind == Kind::Color {
        // One shared sentence keeps every colour option consistent about the accepted forms.
        format!("{} Given {COLOR_HINT}.", o.description)
    } else {
        o.description.to_owned()
    };
    m.insert("description".into(), Value::from(description));
    Value::Object(m)
}

/// A number as JSON: integral values within the exactly representable range become integers,
/// so that `200`, `200.0` and `"200"` all serialise as `200`. Non-finite input becomes `null`
/// (callers reject it before).
pub fn number_value(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < EXACT {
        // In range and integral, so the conversion is exact (and -0.0 becomes 0).
        return Value::from(f as i64);
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn display_number(f: f64) -> String {
    number_value(f).to_string()
}

fn invalid(field: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::InvalidValue {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    // Hostile input may be long; an error message only needs the start of it.
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Coerces a JSON value (or a URL string wrapped in `Value::String`) to the option's type,
/// checks ranges, patterns and allowed values, and normalises it. `null` means "not set" and
/// yields `Ok(None)`. `field` names the option in error messages (`resize.width`).
pub fn coerce(spec: &OptionSpec, field: &str, value: &Value) -> Result<Option<Value>, SchemaError> {
    if value.is_null() {
        return Ok(None);
    }
    let coerced = match spec.kind {
        Kind::Integer { min, max } => {
            let n = as_integer(value)
                .ok_or_else(|| invalid(field, format!("{} is not an integer", describe(value))))?;
            if n < min {
                return Err(invalid(field, format!("{n} is below the minimum {min}")));
            }
            if n > max {
                return Err(invalid(field, format!("{n} is above the maximum {max}")));
            }
            Value::from(n)
        }
        Kind::Number { min, max } => {
            let f = as_number(value)
                .ok_or_else(|| invalid(field, format!("{} is not a number", describe(value))))?;
            if f < min {
                return Err(invalid(
                    field,
                    format!(
                        "{} is below the minimum {}",
                        display_number(f),
                        display_number(min)
                    ),
                ));
            }
            if f > max {
                return Err(invalid(
                    field,
                    format!(
                        "{} is above the maximum {}",
                        display_number(f),
                        display_number(max)
                    ),
                ));
            }
            number_value(f)
        }
        Kind::Boolean => Value::Bool(
            as_bool(value)
                .ok_or_else(|| invalid(field, format!("{} is not a boolean", describe(value))))?,
        ),
        Kind::Text(pattern) => {
            let s = as_text(value)
                .ok_or_else(|| invalid(field, format!("{} is not a string", describe(value))))?;
            if let Some(p) = pattern {
                if !p.matches(&s) {
                    return Err(invalid(
                        field,
                        format!("{} does not match {}", describe(value), p.regex()),
                    ));
                }
            }
            Value::String(s)
        }
        Kind::Color => {
            let s = as_text(value).unwrap_or_default();
            Value::String(normalize_color(&s).ok_or_else(|| {
                invalid(
                    field,
                    format!("{} is not a hex colour like FFFFFF", describe(value)),
                )
            })?)
        }
        Kind::Choice(values) => {
            let s = as_text(value).unwrap_or_default();
            let found = values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(&s))
                .ok_or_else(|| {
                    invalid(
                        field,
                        format!("{} is not one of {}", describe(value), values.join(", ")),
                    )
                })?;
            Value::from(*found)
        }
        Kind::ChoiceList(values) => {
            let items: Vec<String> = match value {
                Value::Array(a) => a.iter().map(|v| as_text(v).unwrap_or_default()).collect(),
                other => as_text(other)
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            };
            let mut chosen = Vec::with_capacity(items.len());
            for item in &items {
                let found = values
                    .iter()
                    .find(|v| v.eq_ignore_ascii_case(item))
                    .ok_or_else(|| {
                        invalid(
                            field,
                            format!("`{item}` is not one of {}", values.join(", ")),
                        )
                    })?;
                chosen.push(*found);
            }
            // Order and repetition do not change the meaning; normalising them keeps the
            // canonical form of equivalent URLs identical.
            chosen.sort_unstable();
            chosen.dedup();
            if chosen.is_empty() {
                return Ok(None);
            }
            Value::from(chosen.join(","))
        }
        Kind::TextList => match value {
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for v in a {
                    match v {
                        Value::String(s) => out.push(Value::from(s.as_str())),
                        _ => return Err(invalid(field, "must be an array of strings")),
                    }
                }
                Value::Array(out)
            }
            Value::String(s) => Value::Array(vec![Value::from(s.as_str())]),
            _ => return Err(invalid(field, "must be an array of strings")),
        },
    };
    Ok(Some(coerced))
}

fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| integral(n.as_f64()?)),
        Value::String(s) => s.parse::<i64>().ok().or_else(|| integral(parse_finite(s)?)),
        _ => None,
    }
}

fn integral(f: f64) -> Option<i64> {
    // Bounds well inside i64 so the cast is exact; no option range comes near them.
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => parse_finite(s),
        _ => None,
    }
}

fn parse_finite(s: &str) -> Option<f64> {
    // Rust's float parser accepts "inf" and "NaN"; those are not numbers an option can hold.
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        // Lenient for clients that send `true` or `0` where the schema says string.
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn normalize_color(s: &str) -> Option<String> {
    let s = s.strip_prefix('#').unwrap_or(s);
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match s.len() {
        6 => Some(s.to_ascii_uppercase()),
        3 => Some(
            s.chars()
                .flat_map(|c| [c, c])
                .collect::<String>()
                .to_ascii_uppercase(),
        ),
        _ => None,
    }
}

/// Coerces every option of one operation; unknown options are refused, `null` values dropped.
/// Defaults are not filled and requirements not checked (see [`fill_defaults`] and
/// [`check_requirement`]), because stack bodies and URL overrides are merged first.
pub fn coerce_operation_options(
    op: &OperationSpec,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, SchemaError> {
    let mut out = Map::new();
    for (name, value) in given {
        let field = format!("{}.{name}", op.name);
        let spec = op.option(name).ok_or_else(|| SchemaError::UnknownOption {
            field: field.clone(),
        })?;
        if let Some(v) = coerce(spec, &field, value)? {
            out.insert(name.clone(), v);
        }
    }
    Ok(out)
}

/// Checks the operation's requirement against the names of the options it has.
pub fn check_requirement(
    op: &OperationSpec,
    has: impl Fn(&str) -> bool,
) -> Result<(), SchemaError> {
    match op.requirement {
        Requirement::None => Ok(()),
        Requirement::All(names) => match names.iter().find(|n| !has(n)) {
            Some(missing) => Err(SchemaError::Rule {
                subject: op.name.to_owned(),
                reason: format!("{missing} is required"),
            }),
            None => Ok(()),
        },
        Requirement::AnyOf(names) => {
            if names.iter().any(|n| has(n)) {
                Ok(())
            } else {
                Err(SchemaError::Rule {
                    subject: op.name.to_owned(),
                    reason: format!("needs {}", names.join(" or ")),
                })
            }
        }
    }
}

/// Adds the default of every option in `specs` that is not in `options` and has one.
pub fn fill_defaults<'a>(
    specs: impl Iterator<Item = &'a OptionSpec>,
    options: &mut Map<String, Value>,
) {
    for spec in specs {
        if !options.contains_key(spec.name) {
            if let Some(d) = spec.default.value() {
                options.insert(spec.name.to_owned(), d);
            }
        }
    }
}

/// Coerces stack options: aliases become full names, unknown options are refused,
/// `null` values dropped.
pub fn coerce_stack_options(given: &Map<String, Value>) -> Result<Map<String, Value>, SchemaError> {
    let mut out = Map::new();
    for (name, value) in given {
        let spec = stack_option(name).ok_or_else(|| SchemaError::UnknownOption {
            field: name.clone(),
        })?;
        if let Some(v) = coerce(spec, spec.name, value)? {
            out.insert(spec.name.to_owned(), v);
        }
    }
    Ok(out)
}

/// `source_file: true` delivers the original bytes, so nothing else may be asked for
/// (rokka: "requires empty operations and no other options"). `explicit` holds the options
/// that were set, not the defaults.
pub fn check_source_file(
    has_operations: bool,
    explicit: &Map<String, Value>,
) -> Result<(), SchemaError> {
    if explicit.get("source_file") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    let rule = |reason: String| SchemaError::Rule {
        subject: "source_file".into(),
        reason,
    };
    if has_operations {
        return Err(rule("true requires an empty list of operations".into()));
    }
    if let Some(other) = explicit.keys().find(|k| k.as_str() != "source_file") {
        return Err(rule(format!("true allows no other options, found {other}")));
    }
    Ok(())
}

/// Whether an option names another source image (its value is an image hash), so that a
/// render reading it must apply that image's protection too.
pub fn names_image(spec: &OptionSpec) -> bool {
    spec.kind == Kind::Text(Some(Pattern::ImageHash))
}

/// The image hashes an operation's options name (`composition.secondary_image`, …), with
/// the option's name, in the order of the schema.
pub fn image_references<'a>(
    name: &str,
    options: &'a Map<String, Value>,
) -> Vec<(&'static str, &'a str)> {
    let Some(op) = operation(name) else {
        return Vec::new();
    };
    op.options
        .iter()
        .filter(|spec| names_image(spec))
        .filter_map(|spec| {
            options
                .get(spec.name)
                .and_then(Value::as_str)
                .map(|v| (spec.name, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resize() -> &'static OperationSpec {
        operation("resize").expect("resize exists")
    }

    fn coerce_op(op: &str, opt: &str, v: Value) -> Result<Option<Value>, SchemaError> {
        let spec = operation(op)
            .and_then(|o| o.option(opt))
            .expect("known option");
        coerce(spec, &format!("{op}.{opt}"), &v)
    }

    #[test]
    fn operations_json_lists_every_required_operation_with_enabled() {
        let doc = operations_json();
        for name in [
            "resize",
            "crop",
            "rotate",
            "autorotate",
            "blur",
            "dropshadow",
            "trim",
            "grayscale",
            "sepia",
            "noop",
            "alpha",
            "composition",
            "modulate",
            "multiply",
            "sharpen",
            "circlemask",
        ] {
            assert_eq!(
                doc[name]["properties"]["enabled"],
                json!({"type":"boolean","default":true,"description":"If set to false, will not use this operation for rendering."}),
                "{name}"
            );
            assert!(doc[name]["required"].is_array(), "{name}");
        }
    }

    #[test]
    fn operations_json_renders_resize_like_the_recorded_api() {
        let doc = operations_json();

        assert_eq!(
            doc["resize"]["properties"]["width"],
            json!({"type":"integer","minimum":1,"maximum":10000,"description":"Width of resize."})
        );
        assert_eq!(doc["resize"]["oneOf"], json!(["width", "height"]));
        assert_eq!(doc["resize"]["required"], json!([]));
        assert_eq!(doc["crop"]["required"], json!(["width", "height"]));
        assert_eq!(doc["rotate"]["required"], json!(["angle"]));
        assert_eq!(
            doc["resize"]["properties"]["mode"]["values"],
            json!(["box", "absolute", "fill"])
        );
    }

    #[test]
    fn stack_options_json_carries_types_ranges_defaults_and_patterns() {
        let doc = stack_options_json();
        let p = &doc["properties"];

        assert_eq!(p["jpg.quality"]["type"], "integer");
        assert_eq!(p["jpg.quality"]["minimum"], 1);
        assert_eq!(p["jpg.quality"]["maximum"], 100);
        assert_eq!(p["jpg.quality"]["default"], 80);
        assert_eq!(p["basestack"]["type"], json!(["string", "null"]));
        assert_eq!(p["basestack"]["default"], Value::Null);
        assert!(p["basestack"]["pattern"].is_string());
        assert_eq!(p["dpr"]["default"], 1);
        assert_eq!(p["optim.quality"]["default"], 4);
        assert_eq!(p["gif.quality"]["default"], 60);
        assert_eq!(
            p["remote_fullurl_whitelist"]["items"],
            json!({"type":"string"})
        );
        assert!(p["transparency.color"].get("default").is_none());
        for name in [
            "basestack",
            "jpg.quality",
            "webp.quality",
            "avif.quality",
            "gif.quality",
            "png.compression_level",
            "optim.quality",
            "optim.disable_all",
            "autoformat",
            "autoformat.exclude",
            "dpr",
            "content_disposition",
            "source_file",
            "transparency.color",
            "jpg.transparency.color",
            "jpg.transparency.autoformat",
            "protected",
            "interlacing.mode",
        ] {
            assert!(p.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn integers_from_numbers_strings_and_integral_floats_are_the_same_value() {
        for v in [json!(200), json!("200"), json!(200.0), json!("200.0")] {
            assert_eq!(coerce_op("resize", "width", v).unwrap(), Some(json!(200)));
        }
    }

    #[test]
    fn an_integer_above_the_maximum_names_the_field_and_the_limit() {
        let err = coerce_op("resize", "width", json!(10001)).unwrap_err();

        assert_eq!(
            err.to_string(),
            "resize.width: 10001 is above the maximum 10000"
        );
    }

    #[test]
    fn an_integer_below_the_minimum_names_the_limit() {
        let err = coerce_op("resize", "height", json!("0")).unwrap_err();

        assert_eq!(err.to_string(), "resize.height: 0 is below the minimum 1");
    }

    #[test]
    fn a_fractional_value_is_not_an_integer() {
        let err = coerce_op("resize", "width", json!(10.5)).unwrap_err();

        assert_eq!(err.to_string(), "resize.width: 10.5 is not an integer");
    }

    #[test]
    fn a_word_is_not_an_integer() {
        assert!(coerce_op("resize", "width", json!("wide")).is_err());
        assert!(coerce_op("resize", "width", json!(true)).is_err());
    }

    #[test]
    fn numbers_keep_fractions_and_integral_numbers_become_integers() {
        assert_eq!(
            coerce_op("rotate", "angle", json!("120.3")).unwrap(),
            Some(json!(120.3))
        );
        assert_eq!(
            coerce_op("rotate", "angle", json!(45.0)).unwrap(),
            Some(json!(45))
        );
        assert_eq!(
            coerce_op("rotate", "angle", json!("45")).unwrap(),
            Some(json!(45))
        );
    }

    #[test]
    fn infinity_and_nan_are_not_numbers() {
        assert!(coerce_op("rotate", "angle", json!("inf")).is_err());
        assert!(coerce_op("rotate", "angle", json!("NaN")).is_err());
    }

    #[test]
    fn a_negative_rotation_is_refused_as_the_api_does() {
        let err = coerce_op("rotate", "angle", json!(-90)).unwrap_err();

        assert_eq!(err.to_string(), "rotate.angle: -90 is below the minimum 0");
    }

    #[test]
    fn booleans_accept_words_and_digits() {
        assert_eq!(
            coerce_op("resize", "upscale", json!("true")).unwrap(),
            Some(json!(true))
        );
        assert_eq!(
            coerce_op("resize", "upscale", json!("0")).unwrap(),
            Some(json!(false))
        );
        assert_eq!(
            coerce_op("resize", "upscale", json!(1)).unwrap(),
            Some(json!(true))
        );
        assert!(coerce_op("resize", "upscale", json!("yes")).is_err());
    }

    #[test]
    fn colours_are_normalised_to_six_upper_case_digits() {
        assert_eq!(
            coerce_op("rotate", "background_color", json!("fff")).unwrap(),
            Some(json!("FFFFFF"))
        );
        assert_eq!(
            coerce_op("rotate", "background_color", json!("0f0F0f")).unwrap(),
            Some(json!("0F0F0F"))
        );
        assert_eq!(
            coerce_op("rotate", "background_color", json!("#abc")).unwrap(),
            Some(json!("AABBCC"))
        );
        assert!(coerce_op("rotate", "background_color", json!("ggg")).is_err());
        assert!(coerce_op("rotate", "background_color", json!("ffff")).is_err());
    }

    #[test]
    fn enumerations_accept_only_listed_values_in_their_listed_spelling() {
        assert_eq!(
            coerce_op("resize", "mode", json!("FILL")).unwrap(),
            Some(json!("fill"))
        );
        let err = coerce_op("resize", "mode", json!("stretch")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resize.mode: \"stretch\" is not one of box, absolute, fill"
        );
    }

    #[test]
    fn anchors_accept_named_and_pixel_positions_only() {
        for ok in [
            "auto",
            "smart",
            "face",
            "subjectarea",
            "left_top",
            "center-bottom",
            "0_100",
            "10000_center",
        ] {
            assert!(Pattern::Anchor.matches(ok), "{ok}");
        }
        for bad in [
            "",
            "middle",
            "left",
            "left_top_x",
            "01_top",
            "10001_top",
            "x auto",
        ] {
            assert!(!Pattern::Anchor.matches(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_hours_minutes_seconds() {
        assert!(Pattern::Timestamp.matches("00:00:22"));
        assert!(Pattern::Timestamp.matches("1:02:03.5"));
        assert!(!Pattern::Timestamp.matches("00:61:00"));
        assert!(!Pattern::Timestamp.matches("00:00"));
    }

    #[test]
    fn null_means_not_set() {
        assert_eq!(coerce_op("resize", "width", Value::Null).unwrap(), None);
    }

    #[test]
    fn unknown_options_of_an_operation_are_refused_by_name() {
        let mut given = Map::new();
        given.insert("depth".into(), json!(3));

        let err = coerce_operation_options(resize(), &given).unwrap_err();

        assert_eq!(err.to_string(), "resize.depth: unknown option");
    }

    #[test]
    fn resize_needs_a_width_or_a_height() {
        let err = check_requirement(resize(), |_| false).unwrap_err();

        assert_eq!(err.to_string(), "resize: needs width or height");
        assert!(check_requirement(resize(), |n| n == "height").is_ok());
    }

    #[test]
    fn crop_needs_both_dimensions() {
        let crop = operation("crop").expect("crop");

        let err = check_requirement(crop, |n| n == "width").unwrap_err();

        assert_eq!(err.to_string(), "crop: height is required");
    }

    #[test]
    fn the_af_alias_means_autoformat() {
        let mut given = Map::new();
        given.insert("af".into(), json!("1"));

        let out = coerce_stack_options(&given).unwrap();

        assert_eq!(out.get("autoformat"), Some(&json!(true)));
    }

    #[test]
    fn unknown_stack_options_are_refused_by_name() {
        let mut given = Map::new();
        given.insert("jpg.qualty".into(), json!(3));

        let err = coerce_stack_options(&given).unwrap_err();

        assert_eq!(err.to_string(), "jpg.qualty: unknown option");
    }

    #[test]
    fn autoformat_exclude_is_sorted_and_checked() {
        let spec = stack_option("autoformat.exclude").expect("known");

        assert_eq!(
            coerce(spec, spec.name, &json!("webp, avif,webp")).unwrap(),
            Some(json!("avif,webp"))
        );
        assert!(coerce(spec, spec.name, &json!("gif")).is_err());
    }

    #[test]
    fn source_file_refuses_operations_and_other_options() {
        let mut explicit = Map::new();
        explicit.insert("source_file".into(), json!(true));
        assert!(check_source_file(false, &explicit).is_ok());
        assert!(check_source_file(true, &explicit).is_err());

        explicit.insert("jpg.quality".into(), json!(50));
        let err = check_source_file(false, &explicit).unwrap_err();
        assert_eq!(
            err.to_string(),
            "source_file: true allows no other options, found jpg.quality"
        );
    }

    #[test]
    fn defaults_fill_only_missing_options_that_have_one() {
        let mut options = Map::new();
        options.insert("mode".into(), json!("fill"));

        fill_defaults(resize().all_options(), &mut options);

        assert_eq!(options.get("mode"), Some(&json!("fill")));
        assert_eq!(options.get("upscale"), Some(&json!(true)));
        assert_eq!(options.get("enabled"), Some(&json!(true)));
        assert!(options.get("width").is_none());
    }

    #[test]
    fn negative_zero_becomes_zero() {
        assert_eq!(number_value(-0.0), json!(0));
        assert_eq!(number_value(0.5), json!(0.5));
    }
}
