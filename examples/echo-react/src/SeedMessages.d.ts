// The seed component is JavaScript, kept as the seed wrote it; this is its type for App.tsx.
import type { JSX } from "react";
import type { PgcastEchoOptions } from "./pgcast";

export declare function SeedMessages(props: { config: PgcastEchoOptions }): JSX.Element;
